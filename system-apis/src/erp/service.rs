//! The `erp.v1` gRPC services over any [`Connector`]: request validation,
//! paging, and the one conversion of [`Error`] into `tonic::Status`.

use std::{collections::HashMap, sync::Arc};

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use erp_connect_proto::custom_fields::{Definition, Definitions, Entity};
use erp_connect_proto::erp::v1::{
    AddAddressRequest, Address, CreateCustomerRequest, CreateSalesOrderRequest, CustomValue, Customer,
    EraseCustomerRequest, EraseCustomerResponse, FindCustomerRequest, GetCustomerRequest, GetOpenAmountRequest,
    GetProductRequest, GetStockLevelsRequest, GetStockLevelsResponse, Invoice, InvoiceRequest, ListChangesRequest,
    ListChangesResponse, ListInvoicesRequest, ListInvoicesResponse, ListProductsRequest, ListProductsResponse,
    ListSalesOrdersRequest, ListSalesOrdersResponse, ListShipmentsRequest, ListShipmentsResponse, OpenAmount, Product,
    RecordInvoicePaymentRequest, SalesOrder, SalesOrderRequest, Shipment, ShipmentRequest, UpdateCreditLimitRequest,
    UpdateCustomerRequest,
    capabilities_service_server::{CapabilitiesService, CapabilitiesServiceServer},
    change_feed_service_server::{ChangeFeedService, ChangeFeedServiceServer},
    customer_service_server::{CustomerService, CustomerServiceServer},
    find_customer_request::Key,
    inventory_service_server::{InventoryService, InventoryServiceServer},
    invoice_service_server::{InvoiceService, InvoiceServiceServer},
    product_service_server::{ProductService, ProductServiceServer},
    receivables_service_server::{ReceivablesService, ReceivablesServiceServer},
    sales_order_service_server::{SalesOrderService, SalesOrderServiceServer},
    shipment_service_server::{ShipmentService, ShipmentServiceServer},
};
use prost::Message;
use rust_decimal::Decimal;
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{
    Connector, CustomerChange, CustomerKey, DEFAULT_PAGE_SIZE, Error, InvoicePayment, MAX_LINES, MAX_PAGE_SIZE,
    MAX_SKUS_PER_QUERY, NewCustomer, NewLine, NewSalesOrder,
};

/// The `erp.v1` services over `connector`, with the deployment's custom
/// fields `custom`.
pub fn routes<C: Connector>(connector: Arc<C>, custom: Arc<Definitions>) -> tonic::service::Routes {
    let s = ErpService { connector, custom };
    tonic::service::Routes::new(ProductServiceServer::new(s.clone()))
        .add_service(InventoryServiceServer::new(s.clone()))
        .add_service(CustomerServiceServer::new(s.clone()))
        .add_service(SalesOrderServiceServer::new(s.clone()))
        .add_service(InvoiceServiceServer::new(s.clone()))
        .add_service(ShipmentServiceServer::new(s.clone()))
        .add_service(ReceivablesServiceServer::new(s.clone()))
        .add_service(ChangeFeedServiceServer::new(s.clone()))
        .add_service(CapabilitiesServiceServer::new(s))
}

struct ErpService<C> {
    connector: Arc<C>,
    custom: Arc<Definitions>,
}

impl<C> Clone for ErpService<C> {
    fn clone(&self) -> Self {
        Self { connector: self.connector.clone(), custom: self.custom.clone() }
    }
}

const PAGE_TOKEN_PREFIX: &str = "after:";
/// Longest idempotency key, id or reference accepted.
const MAX_KEY_LEN: usize = 200;
/// Most decimal places of a unit price (the ERP's price precision).
const PRICE_SCALE: u32 = 4;
/// Most decimal places of an amount of money.
const MONEY_SCALE: u32 = 2;
/// Largest quantity on one line; far beyond any real order, well inside i64.
const MAX_QUANTITY: i64 = 1_000_000;

fn invalid(field: &'static str, message: impl Into<String>) -> Error {
    Error::InvalidArgument { field, message: message.into() }
}

/// Page size asked for, defaulted and capped as `erp.v1` documents.
fn page_size(requested: i32) -> Result<usize, Error> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(invalid("page_size", "must not be negative")),
        n => Ok(usize::try_from(n).unwrap_or(MAX_PAGE_SIZE).min(MAX_PAGE_SIZE)),
    }
}

fn encode_page_token(last_key: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{PAGE_TOKEN_PREFIX}{last_key}"))
}

fn decode_page_token(token: &str) -> Result<Option<String>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let bad = || invalid("page_token", "not a token from a previous page");
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| bad())?;
    let text = String::from_utf8(bytes).map_err(|_| bad())?;
    let key = text.strip_prefix(PAGE_TOKEN_PREFIX).ok_or_else(bad)?;
    Ok(Some(key.to_owned()))
}

fn next_token<T>(more: bool, items: &[T], key: impl Fn(&T) -> &str) -> String {
    match (more, items.last()) {
        (true, Some(last)) => encode_page_token(key(last)),
        _ => String::new(),
    }
}

/// A non-empty identifier of bounded length.
fn required(field: &'static str, value: &str) -> Result<String, Error> {
    let value = value.trim();
    if value.is_empty() {
        return Err(invalid(field, "is required"));
    }
    if value.len() > MAX_KEY_LEN || value.chars().any(char::is_control) {
        return Err(invalid(field, format!("must be at most {MAX_KEY_LEN} printable characters")));
    }
    Ok(value.to_owned())
}

fn optional(field: &'static str, value: &str) -> Result<Option<String>, Error> {
    if value.trim().is_empty() { Ok(None) } else { required(field, value).map(Some) }
}

/// An ISO 4217 code: three upper-case ASCII letters.
fn currency(field: &'static str, value: &str) -> Result<String, Error> {
    if value.len() == 3 && value.bytes().all(|b| b.is_ascii_uppercase()) {
        Ok(value.to_owned())
    } else {
        Err(invalid(field, "must be an ISO 4217 code such as EUR"))
    }
}

/// A decimal string with at most `scale` places, not negative (and not zero unless `allow_zero`).
fn decimal(field: &'static str, value: &str, scale: u32, allow_zero: bool) -> Result<Decimal, Error> {
    let parsed: Decimal = value
        .parse()
        .ok()
        .filter(|_| value.bytes().all(|b| b.is_ascii_digit() || b == b'.'))
        .ok_or_else(|| invalid(field, "must be a decimal number such as 12.50"))?;
    if parsed.scale() > scale {
        return Err(invalid(field, format!("must have at most {scale} decimal places")));
    }
    if parsed.is_zero() && !allow_zero {
        return Err(invalid(field, "must be more than zero"));
    }
    Ok(parsed)
}

fn email(field: &'static str, value: &str) -> Result<Option<String>, Error> {
    let Some(value) = optional(field, value)? else { return Ok(None) };
    match value.split_once('@') {
        Some((local, domain)) if !local.is_empty() && domain.contains('.') && !value.contains(char::is_whitespace) => {
            Ok(Some(value))
        }
        _ => Err(invalid(field, "must be an e-mail address")),
    }
}

fn address(field: &'static str, a: &Address) -> Result<Address, Error> {
    let street = required(field, &a.street)?;
    let city = required(field, &a.city)?;
    let postal_code = optional(field, &a.postal_code)?.unwrap_or_default();
    let country = match a.country.as_str() {
        "" => String::new(),
        c if c.len() == 2 && c.bytes().all(|b| b.is_ascii_uppercase()) => c.to_owned(),
        _ => return Err(invalid(field, "country must be an ISO 3166-1 alpha-2 code such as DE")),
    };
    Ok(Address { id: String::new(), street, city, postal_code, country })
}

/// The encoded request (with its idempotency key and custom fields
/// cleared) and then each non-empty map of custom fields, by position and
/// sorted by name, since protobuf leaves the order of a map's entries open:
/// a replay must match it. Without custom fields it is the encoded request
/// alone, as before custom fields existed.
fn fingerprint(message: &impl Message, custom: &[&HashMap<String, CustomValue>]) -> String {
    let mut bytes = message.encode_to_vec();
    for (position, map) in custom.iter().enumerate().filter(|(_, m)| !m.is_empty()) {
        let mut entries: Vec<_> = map.iter().collect();
        entries.sort_by(|a, b| a.0.cmp(b.0));
        bytes.push(0xff);
        prost::encoding::encode_varint(position as u64, &mut bytes);
        for (name, value) in entries {
            name.encode_length_delimited(&mut bytes).ok();
            value.encode_length_delimited(&mut bytes).ok();
        }
    }
    URL_SAFE_NO_PAD.encode(bytes)
}

/// Custom field values a caller wants written to a new `entity`.
fn writable(
    custom: &Definitions,
    entity: Entity,
    values: &HashMap<String, CustomValue>,
) -> Result<HashMap<String, CustomValue>, Error> {
    custom
        .check_writable(entity, values)
        .map_err(|r| invalid("custom_fields", format!("{}: {}", r.name, r.message)))?;
    Ok(values.clone())
}

fn validate_new_customer(mut req: CreateCustomerRequest, custom: &Definitions) -> Result<NewCustomer, Error> {
    let idempotency_key = required("idempotency_key", &req.idempotency_key)?;
    let addresses = req.addresses.iter().map(|a| address("addresses", a)).collect::<Result<Vec<_>, _>>()?;
    let new = NewCustomer {
        idempotency_key,
        fingerprint: String::new(),
        external_id: optional("external_id", &req.external_id)?,
        name: required("name", &req.name)?,
        email: email("email", &req.email)?,
        currency: if req.currency.is_empty() { "EUR".to_owned() } else { currency("currency", &req.currency)? },
        credit_limit: if req.credit_limit.is_empty() {
            Decimal::ZERO
        } else {
            decimal("credit_limit", &req.credit_limit, MONEY_SCALE, true)?
        },
        addresses,
        custom_fields: writable(custom, Entity::Customer, &req.custom_fields)?,
    };
    let fields = std::mem::take(&mut req.custom_fields);
    let fingerprint = fingerprint(&CreateCustomerRequest { idempotency_key: String::new(), ..req }, &[&fields]);
    Ok(NewCustomer { fingerprint, ..new })
}

/// An `UpdateCustomer` request as a [`CustomerChange`]: only the fields in
/// the mask are checked, so that changing the e-mail does not fail on an
/// empty name it does not set.
fn validate_customer_change(req: &UpdateCustomerRequest) -> Result<CustomerChange, Error> {
    let paths = req.update_mask.as_ref().map(|m| m.paths.as_slice()).unwrap_or_default();
    if paths.is_empty() {
        return Err(invalid("update_mask", "name at least one field to change"));
    }
    let mut change = CustomerChange::default();
    for path in paths {
        match path.as_str() {
            "name" => change.name = Some(required("name", &req.name)?),
            "email" => change.email = Some(email("email", &req.email)?),
            other => return Err(invalid("update_mask", format!("{other:?} is not one of name, email"))),
        }
    }
    Ok(change)
}

fn validate_new_sales_order(mut req: CreateSalesOrderRequest, custom: &Definitions) -> Result<NewSalesOrder, Error> {
    let idempotency_key = required("idempotency_key", &req.idempotency_key)?;
    if req.lines.is_empty() {
        return Err(invalid("lines", "an order needs at least one line"));
    }
    if req.lines.len() > MAX_LINES {
        return Err(invalid("lines", format!("at most {MAX_LINES} lines")));
    }
    let mut lines = Vec::with_capacity(req.lines.len());
    for line in &req.lines {
        if !(1..=MAX_QUANTITY).contains(&line.quantity) {
            return Err(invalid("lines.quantity", format!("must be from 1 to {MAX_QUANTITY}")));
        }
        let unit_price = if line.unit_price.is_empty() {
            None
        } else {
            Some(decimal("lines.unit_price", &line.unit_price, PRICE_SCALE, true)?)
        };
        lines.push(NewLine {
            sku: required("lines.sku", &line.sku)?,
            quantity: line.quantity,
            unit_price,
            custom_fields: writable(custom, Entity::OrderLine, &line.custom_fields)?,
        });
    }
    let new = NewSalesOrder {
        idempotency_key,
        fingerprint: String::new(),
        customer_id: required("customer_id", &req.customer_id)?,
        reference: optional("reference", &req.reference)?.unwrap_or_default(),
        currency: if req.currency.is_empty() { None } else { Some(currency("currency", &req.currency)?) },
        lines,
        custom_fields: writable(custom, Entity::SalesOrder, &req.custom_fields)?,
    };
    let mut maps = vec![std::mem::take(&mut req.custom_fields)];
    maps.extend(req.lines.iter_mut().map(|l| std::mem::take(&mut l.custom_fields)));
    let maps: Vec<_> = maps.iter().collect();
    let fingerprint = fingerprint(&CreateSalesOrderRequest { idempotency_key: String::new(), ..req }, &maps);
    Ok(NewSalesOrder { fingerprint, ..new })
}

#[tonic::async_trait]
impl<C: Connector> ProductService for ErpService<C> {
    async fn list_products(
        &self,
        request: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        let req = request.into_inner();
        let limit = page_size(req.page_size)?;
        let after = decode_page_token(&req.page_token)?;
        let page = self.connector.list_products(after.as_deref(), limit).await?;
        let next_page_token = next_token(page.more, &page.items, |p| &p.sku);
        Ok(Response::new(ListProductsResponse { products: page.items, next_page_token }))
    }

    async fn get_product(&self, request: Request<GetProductRequest>) -> Result<Response<Product>, Status> {
        let sku = required("sku", &request.into_inner().sku)?;
        Ok(Response::new(self.connector.get_product(&sku).await?))
    }
}

#[tonic::async_trait]
impl<C: Connector> InventoryService for ErpService<C> {
    async fn get_stock_levels(
        &self,
        request: Request<GetStockLevelsRequest>,
    ) -> Result<Response<GetStockLevelsResponse>, Status> {
        let skus = request.into_inner().skus;
        if skus.len() > MAX_SKUS_PER_QUERY {
            return Err(invalid("skus", format!("at most {MAX_SKUS_PER_QUERY} SKUs per call")).into());
        }
        let levels = self.connector.stock_levels(&skus).await?;
        Ok(Response::new(GetStockLevelsResponse { levels }))
    }
}

#[tonic::async_trait]
impl<C: Connector> CustomerService for ErpService<C> {
    async fn get_customer(&self, request: Request<GetCustomerRequest>) -> Result<Response<Customer>, Status> {
        let id = required("id", &request.into_inner().id)?;
        Ok(Response::new(self.connector.get_customer(&id).await?))
    }

    async fn find_customer(&self, request: Request<FindCustomerRequest>) -> Result<Response<Customer>, Status> {
        let key = match request.into_inner().key {
            Some(Key::ExternalId(id)) => CustomerKey::ExternalId(required("external_id", &id)?),
            Some(Key::Email(email)) => {
                CustomerKey::Email(self::email("email", &email)?.ok_or_else(|| invalid("email", "is required"))?)
            }
            None => return Err(invalid("key", "give external_id or email").into()),
        };
        Ok(Response::new(self.connector.find_customer(&key).await?))
    }

    async fn create_customer(&self, request: Request<CreateCustomerRequest>) -> Result<Response<Customer>, Status> {
        let new = validate_new_customer(request.into_inner(), &self.custom)?;
        Ok(Response::new(self.connector.create_customer(&new).await?))
    }

    async fn update_credit_limit(
        &self,
        request: Request<UpdateCreditLimitRequest>,
    ) -> Result<Response<Customer>, Status> {
        let req = request.into_inner();
        let id = required("id", &req.id)?;
        let limit = decimal("credit_limit", &req.credit_limit, MONEY_SCALE, true)?;
        Ok(Response::new(self.connector.update_credit_limit(&id, limit).await?))
    }

    async fn add_address(&self, request: Request<AddAddressRequest>) -> Result<Response<Customer>, Status> {
        let req = request.into_inner();
        let id = required("customer_id", &req.customer_id)?;
        let address = address("address", &req.address.unwrap_or_default())?;
        Ok(Response::new(self.connector.add_address(&id, &address).await?))
    }

    async fn update_customer(&self, request: Request<UpdateCustomerRequest>) -> Result<Response<Customer>, Status> {
        let req = request.into_inner();
        let id = required("id", &req.id)?;
        let change = validate_customer_change(&req)?;
        Ok(Response::new(self.connector.update_customer(&id, &change).await?))
    }

    async fn erase_customer(
        &self,
        request: Request<EraseCustomerRequest>,
    ) -> Result<Response<EraseCustomerResponse>, Status> {
        let id = required("id", &request.into_inner().id)?;
        let (customer, actions) = self.connector.erase_customer(&id).await?;
        Ok(Response::new(EraseCustomerResponse { customer: Some(customer), actions }))
    }
}

#[tonic::async_trait]
impl<C: Connector> SalesOrderService for ErpService<C> {
    async fn create_sales_order(
        &self,
        request: Request<CreateSalesOrderRequest>,
    ) -> Result<Response<SalesOrder>, Status> {
        let new = validate_new_sales_order(request.into_inner(), &self.custom)?;
        Ok(Response::new(self.connector.create_sales_order(&new).await?))
    }

    async fn quote_sales_order(&self, request: Request<SalesOrderRequest>) -> Result<Response<SalesOrder>, Status> {
        let id = required("id", &request.into_inner().id)?;
        Ok(Response::new(self.connector.quote_sales_order(&id).await?))
    }

    async fn confirm_sales_order(&self, request: Request<SalesOrderRequest>) -> Result<Response<SalesOrder>, Status> {
        let id = required("id", &request.into_inner().id)?;
        Ok(Response::new(self.connector.confirm_sales_order(&id).await?))
    }

    async fn cancel_sales_order(&self, request: Request<SalesOrderRequest>) -> Result<Response<SalesOrder>, Status> {
        let id = required("id", &request.into_inner().id)?;
        Ok(Response::new(self.connector.cancel_sales_order(&id).await?))
    }

    async fn get_sales_order(&self, request: Request<SalesOrderRequest>) -> Result<Response<SalesOrder>, Status> {
        let id = required("id", &request.into_inner().id)?;
        Ok(Response::new(self.connector.get_sales_order(&id).await?))
    }

    async fn list_sales_orders(
        &self,
        request: Request<ListSalesOrdersRequest>,
    ) -> Result<Response<ListSalesOrdersResponse>, Status> {
        let req = request.into_inner();
        let customer_id = required("customer_id", &req.customer_id)?;
        let limit = page_size(req.page_size)?;
        let after = decode_page_token(&req.page_token)?;
        let page = self.connector.list_sales_orders(&customer_id, after.as_deref(), limit).await?;
        let next_page_token = next_token(page.more, &page.items, |o| &o.id);
        Ok(Response::new(ListSalesOrdersResponse { sales_orders: page.items, next_page_token }))
    }
}

#[tonic::async_trait]
impl<C: Connector> InvoiceService for ErpService<C> {
    async fn list_invoices(
        &self,
        request: Request<ListInvoicesRequest>,
    ) -> Result<Response<ListInvoicesResponse>, Status> {
        let id = required("sales_order_id", &request.into_inner().sales_order_id)?;
        Ok(Response::new(ListInvoicesResponse { invoices: self.connector.list_invoices(&id).await? }))
    }

    async fn get_invoice(&self, request: Request<InvoiceRequest>) -> Result<Response<Invoice>, Status> {
        let id = required("id", &request.into_inner().id)?;
        Ok(Response::new(self.connector.get_invoice(&id).await?))
    }

    async fn post_invoice(&self, request: Request<InvoiceRequest>) -> Result<Response<Invoice>, Status> {
        let id = required("id", &request.into_inner().id)?;
        Ok(Response::new(self.connector.post_invoice(&id).await?))
    }

    async fn record_invoice_payment(
        &self,
        request: Request<RecordInvoicePaymentRequest>,
    ) -> Result<Response<Invoice>, Status> {
        let req = request.into_inner();
        let payment = InvoicePayment {
            idempotency_key: required("idempotency_key", &req.idempotency_key)?,
            invoice_id: required("invoice_id", &req.invoice_id)?,
            currency: currency("currency", &req.currency)?,
            amount: decimal("amount", &req.amount, MONEY_SCALE, false)?,
        };
        Ok(Response::new(self.connector.record_invoice_payment(&payment).await?))
    }

    async fn credit_invoice(&self, request: Request<InvoiceRequest>) -> Result<Response<Invoice>, Status> {
        let id = required("id", &request.into_inner().id)?;
        Ok(Response::new(self.connector.credit_invoice(&id).await?))
    }
}

#[tonic::async_trait]
impl<C: Connector> ShipmentService for ErpService<C> {
    async fn list_shipments(
        &self,
        request: Request<ListShipmentsRequest>,
    ) -> Result<Response<ListShipmentsResponse>, Status> {
        let id = required("sales_order_id", &request.into_inner().sales_order_id)?;
        Ok(Response::new(ListShipmentsResponse { shipments: self.connector.list_shipments(&id).await? }))
    }

    async fn complete_shipment(&self, request: Request<ShipmentRequest>) -> Result<Response<Shipment>, Status> {
        let id = required("id", &request.into_inner().id)?;
        Ok(Response::new(self.connector.complete_shipment(&id).await?))
    }
}

#[tonic::async_trait]
impl<C: Connector> ReceivablesService for ErpService<C> {
    async fn get_open_amount(&self, request: Request<GetOpenAmountRequest>) -> Result<Response<OpenAmount>, Status> {
        let id = required("customer_id", &request.into_inner().customer_id)?;
        Ok(Response::new(self.connector.open_amount(&id).await?))
    }
}

#[tonic::async_trait]
impl<C: Connector> ChangeFeedService for ErpService<C> {
    async fn list_changes(
        &self,
        request: Request<ListChangesRequest>,
    ) -> Result<Response<ListChangesResponse>, Status> {
        let req = request.into_inner();
        let limit = match req.limit {
            0 => 100,
            n if n < 0 => return Err(invalid("limit", "must not be negative").into()),
            n => usize::try_from(n).unwrap_or(1000).min(1000),
        };
        let since = if req.since_cursor.is_empty() { None } else { Some(req.since_cursor.as_str()) };
        let (changes, next_cursor) = self.connector.list_changes(since, limit).await?;
        Ok(Response::new(ListChangesResponse { changes, next_cursor }))
    }
}

#[tonic::async_trait]
impl<C: Connector> CapabilitiesService for ErpService<C> {
    async fn get_capabilities(
        &self,
        _request: Request<erp_connect_proto::erp::v1::GetCapabilitiesRequest>,
    ) -> Result<Response<erp_connect_proto::erp::v1::Capabilities>, Status> {
        let mut capabilities = self.connector.capabilities().await?;
        capabilities.custom_fields = self.custom.all().iter().map(Definition::to_proto).collect();
        Ok(Response::new(capabilities))
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
            Error::NotFound { kind, id } => Status::with_error_details(
                Code::NotFound,
                format!("no {kind} {id:?}"),
                ErrorDetails::with_resource_info(kind, id, "", ""),
            ),
            Error::FailedPrecondition { reason, subject, message } => Status::with_error_details(
                Code::FailedPrecondition,
                message.clone(),
                ErrorDetails::with_precondition_failure_violation(reason, subject, message),
            ),
            Error::IdempotencyConflict { key } => Status::with_error_details(
                Code::AlreadyExists,
                "this idempotency key was used for a different request",
                ErrorDetails::with_bad_request_violation("idempotency_key", format!("{key:?} is already used")),
            ),
            err if err.is_retryable() => {
                tracing::warn!(error = %err, cause = ?std::error::Error::source(&err), "ERP unavailable");
                Status::unavailable("the ERP is unavailable; retry later")
            }
            err => {
                tracing::error!(error = %err, cause = ?std::error::Error::source(&err), "ERP call failed");
                Status::internal("the ERP call failed")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_tokens_round_trip_and_garbage_is_rejected() {
        let token = encode_page_token("WIDGET-1");
        assert_eq!(decode_page_token(&token).expect("valid"), Some("WIDGET-1".to_owned()));
        assert_eq!(decode_page_token("").expect("empty"), None);
        for bad in ["%%%", "bm9wZQ", "not base64!"] {
            assert!(matches!(decode_page_token(bad), Err(Error::InvalidArgument { field: "page_token", .. })), "{bad}");
        }
    }

    #[test]
    fn page_size_defaults_caps_and_rejects_negatives() {
        assert_eq!(page_size(0).expect("default"), DEFAULT_PAGE_SIZE);
        assert_eq!(page_size(5).expect("small"), 5);
        assert_eq!(page_size(10_000).expect("capped"), MAX_PAGE_SIZE);
        assert!(page_size(-1).is_err());
    }

    #[test]
    fn decimals_are_checked_for_form_sign_and_places() {
        assert_eq!(decimal("x", "12.50", 2, false).expect("ok"), Decimal::new(1250, 2));
        for bad in ["", "abc", "-1", "1e3", "12.505", " 1", "+1"] {
            assert!(decimal("x", bad, 2, false).is_err(), "{bad:?}");
        }
        assert!(decimal("x", "0", 2, false).is_err());
        assert!(decimal("x", "0.00", 2, true).is_ok());
    }

    #[test]
    fn currencies_and_emails_are_checked() {
        assert!(currency("c", "EUR").is_ok());
        for bad in ["eur", "EURO", "E1R", ""] {
            assert!(currency("c", bad).is_err(), "{bad:?}");
        }
        assert!(email("e", "a@b.de").expect("ok").is_some());
        assert!(email("e", "").expect("empty is none").is_none());
        assert!(email("e", "nope").is_err());
    }

    #[test]
    fn customer_changes_check_only_the_masked_fields() {
        let request = |paths: &[&str], name: &str, email: &str| UpdateCustomerRequest {
            id: "c".into(),
            update_mask: Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() }),
            name: name.into(),
            email: email.into(),
        };
        let change = validate_customer_change(&request(&["email"], "", "")).expect("e-mail removed");
        assert_eq!(change, CustomerChange { name: None, email: Some(None) });
        let change = validate_customer_change(&request(&["name", "email"], "N", "a@b.de")).expect("both");
        assert_eq!(change, CustomerChange { name: Some("N".into()), email: Some(Some("a@b.de".into())) });
        for (paths, name, email) in
            [(&[][..], "N", ""), (&["name"], "", ""), (&["email"], "", "x"), (&["phone"], "N", "")]
        {
            assert!(validate_customer_change(&request(paths, name, email)).is_err(), "{paths:?} {name:?} {email:?}");
        }
    }
}
