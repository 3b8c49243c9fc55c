//! `crm.v1.CrmService` over any [`Connector`]: request validation and
//! normalisation, and the one conversion of [`Error`] into `tonic::Status`.
//!
//! Normalising here, once, means every backend stores and compares the
//! same forms: an e-mail address is trimmed (and compared lower-cased), a
//! VAT id is upper-cased without spaces, dots or dashes ("de 123.456.789"
//! is "DE123456789"), so a lookup by either finds what another system
//! wrote in another spelling.

use std::{collections::BTreeSet, sync::Arc};

use erp_connect_proto::crm::v1::{
    Address, Contact, CreateCustomerRequest, CreateCustomerResponse, EraseCustomerRequest, EraseCustomerResponse,
    FindCustomersRequest, FindCustomersResponse, GetCustomerRequest, GetCustomerResponse, ListChangesRequest,
    ListChangesResponse, UpdateCustomerRequest, UpdateCustomerResponse,
    crm_service_server::{CrmService, CrmServiceServer},
    find_customers_request::Key,
};
use prost::Message;
use rust_decimal::Decimal;
use sha2::Digest;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{Connector, CustomerKey, CustomerUpdate, Error, Field, NewCustomer, Values};

/// The `crm.v1` service over `connector`, alone.
pub fn routes<C: Connector>(connector: Arc<C>) -> tonic::service::Routes {
    tonic::service::Routes::new(server(connector))
}

/// The `crm.v1` service over `connector`, to add to other routes.
pub fn server<C: Connector>(connector: Arc<C>) -> CrmServiceServer<CrmApi<C>> {
    CrmServiceServer::new(CrmApi { connector })
}

/// Implements `crm.v1.CrmService`; built by [`server`].
pub struct CrmApi<C> {
    connector: Arc<C>,
}

/// Longest idempotency key, id, name or origin accepted.
const MAX_TEXT_LEN: usize = 200;
/// Longest e-mail address (RFC 5321's path limit).
const MAX_EMAIL_LEN: usize = 254;
/// Longest phone number, with its separators.
const MAX_PHONE_LEN: usize = 32;
/// Most contacts, and most addresses, of one customer.
pub const MAX_ENTRIES: usize = 50;
/// Default and largest page of the change feed.
const DEFAULT_CHANGES: usize = 100;
const MAX_CHANGES: usize = 1000;

/// A non-empty, printable text of bounded length, trimmed.
fn required(field: &str, value: &str) -> Result<String, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Err(Error::invalid(field, "is required"));
    }
    if value.chars().count() > MAX_TEXT_LEN || value.chars().any(char::is_control) {
        return Err(Error::invalid(field, format!("must be at most {MAX_TEXT_LEN} printable characters")));
    }
    Ok(value.to_owned())
}

fn optional(field: &str, value: &str) -> Result<Option<String>, Error> {
    if value.trim().is_empty() { Ok(None) } else { required(field, value).map(Some) }
}

/// An e-mail address, trimmed; empty is `None`.
fn email(field: &str, value: &str) -> Result<Option<String>, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let shaped = match value.split_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && domain.contains('.')
                && !domain.starts_with('.')
                && !domain.ends_with('.')
                && !domain.contains('@')
                && !value.chars().any(|c| c.is_whitespace() || c.is_control())
        }
        None => false,
    };
    if !shaped || value.len() > MAX_EMAIL_LEN {
        return Err(Error::invalid(field, "must be an e-mail address"));
    }
    Ok(Some(value.to_owned()))
}

/// A phone number: digits with the usual separators and at most one
/// leading `+`; empty is `None`.
fn phone(field: &str, value: &str) -> Result<Option<String>, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    let digits = value.chars().filter(char::is_ascii_digit).count();
    let allowed = value.strip_prefix('+').unwrap_or(value).chars().all(|c| c.is_ascii_digit() || " -()/.".contains(c));
    if !allowed || digits < 3 || value.len() > MAX_PHONE_LEN {
        return Err(Error::invalid(field, "must be a phone number such as +49 40 123456"));
    }
    Ok(Some(value.to_owned()))
}

/// A VAT id, normalised: without spaces, dots or dashes, upper case; two
/// letters (the country) and 2 to 13 letters or digits. Empty is `None`.
pub fn vat_id(field: &str, value: &str) -> Result<Option<String>, Error> {
    let normalised: String =
        value.chars().filter(|c| !(c.is_whitespace() || *c == '.' || *c == '-')).collect::<String>().to_uppercase();
    if normalised.is_empty() {
        return Ok(None);
    }
    let (country, number) = normalised.split_at(normalised.char_indices().nth(2).map_or(normalised.len(), |(i, _)| i));
    let ok = country.len() == 2
        && country.bytes().all(|b| b.is_ascii_uppercase())
        && (2..=13).contains(&number.len())
        && number.bytes().all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    if !ok {
        return Err(Error::invalid(field, "must be a VAT id: a country code and its number, such as DE123456789"));
    }
    Ok(Some(normalised))
}

/// A credit limit: a decimal amount, not negative, at most two places
/// (a limit is not silently rounded), normalised as every amount is
/// (`12.5` is `12.50`). Empty is `None`, the limit unknown.
pub fn credit_limit(field: &str, value: &str) -> Result<Option<String>, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Ok(None);
    }
    if value.starts_with('-') {
        return Err(Error::invalid(field, "must not be negative"));
    }
    // Digits and a point only: rust_decimal also reads `1e3`, which no
    // system writes a limit as.
    let amount: Decimal = value
        .parse()
        .ok()
        .filter(|_| value.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        .ok_or_else(|| Error::invalid(field, "must be a decimal amount such as 5000.00"))?;
    if amount.scale() > erp_connect_proto::money::PLACES {
        return Err(Error::invalid(field, "must have at most two decimal places"));
    }
    Ok(Some(erp_connect_proto::money::format(amount)))
}

fn contact(field: &str, c: &Contact) -> Result<Contact, Error> {
    Ok(Contact {
        id: c.id.trim().to_owned(),
        name: required(&format!("{field}.name"), &c.name)?,
        email: email(&format!("{field}.email"), &c.email)?.unwrap_or_default(),
        phone: phone(&format!("{field}.phone"), &c.phone)?.unwrap_or_default(),
        role: optional(&format!("{field}.role"), &c.role)?.unwrap_or_default(),
    })
}

fn address(field: &str, a: &Address) -> Result<Address, Error> {
    let country = match a.country.trim() {
        "" => String::new(),
        c if c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()) => c.to_owned(),
        _ => return Err(Error::invalid(format!("{field}.country"), "must be an ISO 3166-1 alpha-2 code such as DE")),
    };
    Ok(Address {
        id: a.id.trim().to_owned(),
        street: required(&format!("{field}.street"), &a.street)?,
        city: required(&format!("{field}.city"), &a.city)?,
        postal_code: optional(&format!("{field}.postal_code"), &a.postal_code)?.unwrap_or_default(),
        country,
    })
}

fn entries<T>(field: &str, items: &[T], check: impl Fn(&str, &T) -> Result<T, Error>) -> Result<Vec<T>, Error> {
    if items.len() > MAX_ENTRIES {
        return Err(Error::invalid(field, format!("at most {MAX_ENTRIES}")));
    }
    items.iter().enumerate().map(|(i, item)| check(&format!("{field}[{i}]"), item)).collect()
}

/// The writer's origin: empty, or a printable text of bounded length.
fn origin(value: &str) -> Result<String, Error> {
    Ok(optional("origin", value)?.unwrap_or_default())
}

/// A digest of the encoded request without its idempotency key: a replay
/// has the same one, a different request under the same key does not.
fn fingerprint(message: &impl Message) -> String {
    sha2::Sha256::digest(message.encode_to_vec()).iter().map(|b| format!("{b:02x}")).collect()
}

fn validate_new_customer(req: CreateCustomerRequest) -> Result<NewCustomer, Error> {
    let idempotency_key = required("idempotency_key", &req.idempotency_key)?;
    let values = Values {
        name: required("name", &req.name)?,
        email: email("email", &req.email)?,
        phone: phone("phone", &req.phone)?,
        vat_id: vat_id("vat_id", &req.vat_id)?,
        contacts: entries("contacts", &req.contacts, contact)?,
        addresses: entries("addresses", &req.addresses, address)?,
        // The ERP owns it; it is written here by updates only.
        credit_limit: None,
    };
    let origin = origin(&req.origin)?;
    let fingerprint = fingerprint(&CreateCustomerRequest { idempotency_key: String::new(), ..req });
    Ok(NewCustomer { idempotency_key, fingerprint, origin, values })
}

fn validate_update(req: UpdateCustomerRequest) -> Result<CustomerUpdate, Error> {
    let id = required("id", &req.id)?;
    let idempotency_key = required("idempotency_key", &req.idempotency_key)?;
    let paths = req.update_mask.as_ref().map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        return Err(Error::invalid("update_mask", "name at least one field to change"));
    }
    let mut fields = BTreeSet::new();
    for path in paths {
        let field = Field::parse(path).ok_or_else(|| {
            Error::invalid(
                "update_mask",
                format!("{path:?} is not one of name, email, phone, vat_id, contacts, addresses, credit_limit"),
            )
        })?;
        fields.insert(field);
    }
    let expected_version = match req.expected_version {
        0 => None,
        n if n < 0 => return Err(Error::invalid("expected_version", "must not be negative")),
        n => Some(n),
    };
    // Only the fields in the mask are checked: the others are ignored, and
    // an update of the phone must not fail on an empty name it does not set.
    let has = |f| fields.contains(&f);
    let values = Values {
        name: if has(Field::Name) { required("name", &req.name)? } else { String::new() },
        email: if has(Field::Email) { email("email", &req.email)? } else { None },
        phone: if has(Field::Phone) { phone("phone", &req.phone)? } else { None },
        vat_id: if has(Field::VatId) { vat_id("vat_id", &req.vat_id)? } else { None },
        contacts: if has(Field::Contacts) { entries("contacts", &req.contacts, contact)? } else { Vec::new() },
        addresses: if has(Field::Addresses) { entries("addresses", &req.addresses, address)? } else { Vec::new() },
        credit_limit: if has(Field::CreditLimit) { credit_limit("credit_limit", &req.credit_limit)? } else { None },
    };
    let origin = origin(&req.origin)?;
    let fingerprint = fingerprint(&UpdateCustomerRequest { idempotency_key: String::new(), ..req });
    Ok(CustomerUpdate { id, idempotency_key, fingerprint, origin, expected_version, fields, values })
}

#[tonic::async_trait]
impl<C: Connector> CrmService for CrmApi<C> {
    async fn create_customer(
        &self,
        request: Request<CreateCustomerRequest>,
    ) -> Result<Response<CreateCustomerResponse>, Status> {
        let new = validate_new_customer(request.into_inner())?;
        let customer = self.connector.create_customer(&new).await?;
        Ok(Response::new(CreateCustomerResponse { customer: Some(customer) }))
    }

    async fn get_customer(
        &self,
        request: Request<GetCustomerRequest>,
    ) -> Result<Response<GetCustomerResponse>, Status> {
        let id = required("id", &request.into_inner().id)?;
        let customer = self.connector.get_customer(&id).await?;
        Ok(Response::new(GetCustomerResponse { customer: Some(customer) }))
    }

    async fn find_customers(
        &self,
        request: Request<FindCustomersRequest>,
    ) -> Result<Response<FindCustomersResponse>, Status> {
        let key = match request.into_inner().key {
            Some(Key::Email(value)) => CustomerKey::Email(
                email("email", &value)?.ok_or_else(|| Error::invalid("email", "is required"))?.to_lowercase(),
            ),
            Some(Key::VatId(value)) => {
                CustomerKey::VatId(vat_id("vat_id", &value)?.ok_or_else(|| Error::invalid("vat_id", "is required"))?)
            }
            None => return Err(Error::invalid("key", "give email or vat_id").into()),
        };
        let customers = self.connector.find_customers(&key).await?;
        Ok(Response::new(FindCustomersResponse { customers }))
    }

    async fn update_customer(
        &self,
        request: Request<UpdateCustomerRequest>,
    ) -> Result<Response<UpdateCustomerResponse>, Status> {
        let update = validate_update(request.into_inner())?;
        let customer = self.connector.update_customer(&update).await?;
        Ok(Response::new(UpdateCustomerResponse { customer: Some(customer) }))
    }

    async fn erase_customer(
        &self,
        request: Request<EraseCustomerRequest>,
    ) -> Result<Response<EraseCustomerResponse>, Status> {
        let req = request.into_inner();
        let id = required("id", &req.id)?;
        let customer = self.connector.erase_customer(&id, &origin(&req.origin)?).await?;
        Ok(Response::new(EraseCustomerResponse { customer: Some(customer) }))
    }

    async fn list_changes(
        &self,
        request: Request<ListChangesRequest>,
    ) -> Result<Response<ListChangesResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.limit {
            0 => DEFAULT_CHANGES,
            n if n < 0 => return Err(Error::invalid("limit", "must not be negative").into()),
            n => usize::try_from(n).unwrap_or(MAX_CHANGES).min(MAX_CHANGES),
        };
        let after = if req.after_cursor.is_empty() { None } else { Some(req.after_cursor.as_str()) };
        let (changes, next_cursor) = self.connector.list_changes(after, limit).await?;
        Ok(Response::new(ListChangesResponse { changes, next_cursor }))
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        match err {
            Error::InvalidArgument { field, message } => Status::with_error_details(
                Code::InvalidArgument,
                format!("invalid {field}: {message}"),
                ErrorDetails::with_bad_request_violation(field, message),
            ),
            Error::NotFound { id } => Status::with_error_details(
                Code::NotFound,
                format!("no customer {id:?}"),
                ErrorDetails::with_resource_info("customer", id, "", ""),
            ),
            // ABORTED, not FAILED_PRECONDITION: the caller's fix is to read
            // the customer again and retry its read-modify-write.
            Error::VersionMismatch { id, expected, actual } => Status::with_error_details(
                Code::Aborted,
                format!("the customer is at version {actual}, not {expected}"),
                ErrorDetails::with_precondition_failure_violation(
                    "VERSION_MISMATCH",
                    id,
                    format!("the customer is at version {actual}"),
                ),
            ),
            Error::Erased { id } => Status::with_error_details(
                Code::FailedPrecondition,
                "the customer is erased",
                ErrorDetails::with_precondition_failure_violation("ERASED", id, "the customer is erased"),
            ),
            // As erp.v1 answers the same misuse.
            Error::IdempotencyConflict { key } => Status::with_error_details(
                Code::AlreadyExists,
                "this idempotency key was used for a different request",
                ErrorDetails::with_bad_request_violation("idempotency_key", format!("{key:?} is already used")),
            ),
            err if err.is_retryable() => {
                tracing::warn!(error = %err, cause = ?std::error::Error::source(&err), "CRM unavailable");
                Status::unavailable("the CRM is unavailable; retry later")
            }
            err => {
                tracing::error!(error = %err, cause = ?std::error::Error::source(&err), "CRM call failed");
                Status::internal("the CRM call failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vat_ids_are_normalised_and_checked() {
        assert_eq!(vat_id("v", " de 123.456-789 ").expect("ok").as_deref(), Some("DE123456789"));
        assert_eq!(vat_id("v", "").expect("empty"), None);
        for bad in ["12345", "D", "DE1", "DE12345678901234", "DE12_34", "ÄÖ1234"] {
            assert!(vat_id("v", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn emails_and_phones_are_checked() {
        assert_eq!(email("e", "  Ada@Example.com ").expect("ok").as_deref(), Some("Ada@Example.com"));
        for bad in ["nope", "a@b", "@b.de", "a b@c.de", "a@.de"] {
            assert!(email("e", bad).is_err(), "{bad:?}");
        }
        assert_eq!(phone("p", "+49 (40) 123-456").expect("ok").as_deref(), Some("+49 (40) 123-456"));
        for bad in ["12", "call me", "+49+40", "1".repeat(40).as_str()] {
            assert!(phone("p", bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn fields_round_trip_their_names() {
        for field in Field::ALL {
            assert_eq!(Field::parse(field.as_str()), Some(field));
        }
        assert_eq!(Field::parse("version"), None);
    }
}
