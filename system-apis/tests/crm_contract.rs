//! The `crm.v1` contract: create, read, find, update with optimistic
//! concurrency, idempotent replays and conflicting reuse of keys, bad input
//! and the change feed, as a caller sees them over gRPC. Each test is
//! written once and run against every CRM backend (see the `backend_*`
//! modules at the bottom); a new backend passes this suite before it ships.
//!
//! Tests may share one CRM (a remote one keeps its customers between
//! runs), so each makes its own customers with unique e-mail addresses and
//! VAT ids, and reads the change feed relative to where it stood first.

use erp_connect_proto::crm::v1::{
    Address, ChangeKind, Contact, CreateCustomerRequest, Customer, CustomerChange, EraseCustomerRequest,
    FindCustomersRequest, GetCustomerRequest, ListChangesRequest, UpdateCustomerRequest,
    crm_service_client::CrmServiceClient, find_customers_request::Key,
};
use platform::channel::GrpcChannel;
use tonic::Code;
use tonic_types::StatusExt;

/// A `crm.v1` client, and what keeps its backend alive for the test.
struct Crm {
    client: CrmServiceClient<GrpcChannel>,
    _guard: Box<dyn std::any::Any + Send>,
}

fn unique() -> String {
    ulid::Ulid::new().to_string().to_lowercase()
}

/// A VAT id no other test uses: "DE" and 12 digits from a fresh ULID.
fn unique_vat() -> String {
    let digits: String = ulid::Ulid::new().0.to_string().chars().rev().take(12).collect();
    format!("DE{digits}")
}

fn mask(paths: &[&str]) -> Option<prost_types::FieldMask> {
    Some(prost_types::FieldMask { paths: paths.iter().map(|p| (*p).to_owned()).collect() })
}

/// A full create request with a fresh key and e-mail.
fn new_request(tag: &str) -> CreateCustomerRequest {
    let u = unique();
    CreateCustomerRequest {
        idempotency_key: format!("create-{u}"),
        name: format!("Customer {tag}"),
        email: format!("{tag}-{u}@example.com"),
        phone: "+49 40 123456".into(),
        vat_id: unique_vat(),
        contacts: vec![Contact {
            name: "Ada Buyer".into(),
            email: format!("ada-{u}@example.com"),
            role: "purchasing".into(),
            ..Default::default()
        }],
        addresses: vec![Address {
            street: "Teststrasse 1".into(),
            city: "Hamburg".into(),
            postal_code: "20095".into(),
            country: "DE".into(),
            ..Default::default()
        }],
        origin: "contract-test".into(),
    }
}

impl Crm {
    fn new(channel: GrpcChannel, guard: Box<dyn std::any::Any + Send>) -> Self {
        Self { client: CrmServiceClient::new(channel), _guard: guard }
    }

    async fn create(&mut self, request: CreateCustomerRequest) -> Result<Customer, tonic::Status> {
        let response = self.client.create_customer(request).await?.into_inner();
        Ok(response.customer.expect("a customer"))
    }

    async fn get(&mut self, id: &str) -> Result<Customer, tonic::Status> {
        let response = self.client.get_customer(GetCustomerRequest { id: id.into() }).await?.into_inner();
        Ok(response.customer.expect("a customer"))
    }

    async fn update(&mut self, request: UpdateCustomerRequest) -> Result<Customer, tonic::Status> {
        let response = self.client.update_customer(request).await?.into_inner();
        Ok(response.customer.expect("a customer"))
    }

    async fn find(&mut self, key: Key) -> Result<Vec<Customer>, tonic::Status> {
        Ok(self.client.find_customers(FindCustomersRequest { key: Some(key) }).await?.into_inner().customers)
    }

    async fn changes(&mut self, after: &str, limit: i32) -> (Vec<CustomerChange>, String) {
        let page = self
            .client
            .list_changes(ListChangesRequest { after_cursor: after.into(), limit })
            .await
            .expect("changes")
            .into_inner();
        (page.changes, page.next_cursor)
    }

    /// The change feed's cursor at its end, now.
    async fn feed_end(&mut self) -> String {
        let mut cursor = String::new();
        loop {
            let (changes, next) = self.changes(&cursor, 1000).await;
            cursor = next;
            if changes.is_empty() {
                return cursor;
            }
        }
    }

    /// Every change of `id` after `cursor`.
    async fn changes_of(&mut self, cursor: &str, id: &str) -> Vec<CustomerChange> {
        let (changes, _) = self.changes(cursor, 1000).await;
        changes.into_iter().filter(|c| c.customer_id == id).collect()
    }
}

fn assert_field_violation(status: &tonic::Status, field: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
    let details = status.get_error_details();
    let violations = &details.bad_request().expect("BadRequest details").field_violations;
    assert!(violations.iter().any(|v| v.field == field), "{field} in {violations:?}");
}

async fn customers_are_created_normalised_and_read_back(mut crm: Crm) {
    let mut request = new_request("norm");
    let u = unique();
    request.email = format!("  Ada.Lovelace-{u}@Example.COM ");
    request.vat_id = "de 123.456-789".into();
    let created = crm.create(request).await.expect("create");
    assert!(!created.id.is_empty());
    assert_eq!(created.version, 1);
    assert_eq!(created.name, "Customer norm");
    assert_eq!(created.email, format!("Ada.Lovelace-{u}@Example.COM"), "trimmed, case kept");
    assert_eq!(created.vat_id, "DE123456789", "upper case without separators");
    assert_eq!(created.phone, "+49 40 123456");
    assert_eq!(created.contacts.len(), 1);
    assert!(!created.contacts[0].id.is_empty(), "the CRM sets contact ids");
    assert_eq!(created.contacts[0].role, "purchasing");
    assert_eq!(created.addresses.len(), 1);
    assert!(!created.addresses[0].id.is_empty(), "the CRM sets address ids");
    assert_eq!(created.addresses[0].country, "DE");
    assert!(created.created_at.is_some());
    assert_eq!(created.created_at, created.updated_at);

    let read = crm.get(&created.id).await.expect("get");
    assert_eq!(read, created, "read back as created");

    // Optional fields may be left out.
    let minimal = crm
        .create(CreateCustomerRequest {
            idempotency_key: format!("min-{u}"),
            name: "Just a name".into(),
            ..Default::default()
        })
        .await
        .expect("create with a name alone");
    assert_eq!((minimal.email.as_str(), minimal.vat_id.as_str(), minimal.contacts.len()), ("", "", 0));
}

async fn unknown_customers_are_not_found(mut crm: Crm) {
    let status = crm.get("crm_NO_SUCH_CUSTOMER").await.expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
    let details = status.get_error_details();
    let info = details.resource_info().expect("ResourceInfo details");
    assert_eq!((info.resource_type.as_str(), info.resource_name.as_str()), ("customer", "crm_NO_SUCH_CUSTOMER"));

    let status = crm
        .update(UpdateCustomerRequest {
            id: "crm_NO_SUCH_CUSTOMER".into(),
            idempotency_key: format!("upd-{}", unique()),
            update_mask: mask(&["name"]),
            name: "Nobody".into(),
            ..Default::default()
        })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

async fn customers_are_found_by_normalised_email_or_vat_id(mut crm: Crm) {
    let u = unique();
    let vat = unique_vat();
    let mut first = new_request("find-1");
    first.email = format!("twin-{u}@example.com");
    first.vat_id = vat.clone();
    let first = crm.create(first).await.expect("first");
    // A duplicate in another spelling: a CRM holds what it is given.
    let mut second = new_request("find-2");
    second.email = format!("TWIN-{u}@Example.com");
    let second = crm.create(second).await.expect("second");

    let by_email = crm.find(Key::Email(format!(" Twin-{u}@EXAMPLE.com"))).await.expect("by e-mail");
    let ids: Vec<_> = by_email.iter().map(|c| c.id.as_str()).collect();
    assert_eq!(ids, [first.id.as_str(), second.id.as_str()], "both, oldest first");
    assert_eq!(by_email[0], first, "whole customers");

    let spaced = format!("{} {}", &vat[..2].to_lowercase(), &vat[2..]);
    let by_vat = crm.find(Key::VatId(spaced)).await.expect("by VAT id");
    assert_eq!(by_vat.iter().map(|c| c.id.as_str()).collect::<Vec<_>>(), [first.id.as_str()]);

    // Exact: a part of an address matches nothing.
    assert!(crm.find(Key::Email(format!("win-{u}@example.com"))).await.expect("no match").is_empty());
    assert!(crm.find(Key::VatId(unique_vat())).await.expect("no match").is_empty());

    let status = crm.client.find_customers(FindCustomersRequest { key: None }).await.expect_err("no key");
    assert_field_violation(&status, "key");
    let status = crm.find(Key::VatId("12345".into())).await.expect_err("malformed");
    assert_field_violation(&status, "vat_id");
}

async fn creating_is_idempotent_per_key(mut crm: Crm) {
    let cursor = crm.feed_end().await;
    let request = new_request("idem");
    let created = crm.create(request.clone()).await.expect("create");
    let replayed = crm.create(request.clone()).await.expect("replay");
    assert_eq!(replayed, created, "a replay answers the same customer");
    let found = crm.find(Key::Email(request.email.clone())).await.expect("find");
    assert_eq!(found.len(), 1, "created once");
    assert_eq!(crm.changes_of(&cursor, &created.id).await.len(), 1, "one change");

    let other = CreateCustomerRequest { name: "Someone else".into(), ..request };
    let status = crm.create(other).await.expect_err("the key with another request");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");
    assert_field_violation_any(&status, "idempotency_key");
}

/// As [`assert_field_violation`], for codes other than INVALID_ARGUMENT.
fn assert_field_violation_any(status: &tonic::Status, field: &str) {
    let details = status.get_error_details();
    let violations = &details.bad_request().expect("BadRequest details").field_violations;
    assert!(violations.iter().any(|v| v.field == field), "{field} in {violations:?}");
}

async fn updates_change_the_masked_fields_and_raise_the_version(mut crm: Crm) {
    let created = crm.create(new_request("upd")).await.expect("create");
    let kept_contact = created.contacts[0].clone();
    // Only the phone and the contacts: the empty name is not in the mask.
    let updated = crm
        .update(UpdateCustomerRequest {
            id: created.id.clone(),
            idempotency_key: format!("upd-{}", unique()),
            update_mask: mask(&["phone", "contacts"]),
            phone: "+49 40 654321".into(),
            contacts: vec![
                Contact { role: "accounts".into(), ..kept_contact.clone() },
                Contact { name: "Bob Second".into(), phone: "040 111222".into(), ..Default::default() },
            ],
            expected_version: created.version,
            origin: "ui".into(),
            ..Default::default()
        })
        .await
        .expect("update");
    assert_eq!(updated.version, 2);
    assert_eq!(updated.name, created.name, "not in the mask: unchanged");
    assert_eq!(updated.email, created.email);
    assert_eq!(updated.addresses, created.addresses);
    assert_eq!(updated.phone, "+49 40 654321");
    assert_eq!(updated.contacts.len(), 2);
    assert_eq!(updated.contacts[0].id, kept_contact.id, "a contact passed with its id keeps it");
    assert_eq!(updated.contacts[0].role, "accounts");
    assert_eq!(updated.contacts[1].name, "Bob Second");
    assert!(!updated.contacts[1].id.is_empty());
    assert_eq!(updated.created_at, created.created_at);
    let (before, after) = (created.updated_at.expect("time"), updated.updated_at.expect("time"));
    assert!((after.seconds, after.nanos) >= (before.seconds, before.nanos), "{before:?} then {after:?}");
    assert_eq!(crm.get(&created.id).await.expect("get"), updated);

    // Clearing an optional field, and a new VAT id found by it.
    let vat = unique_vat();
    let cleared = crm
        .update(UpdateCustomerRequest {
            id: created.id.clone(),
            idempotency_key: format!("upd-{}", unique()),
            update_mask: mask(&["email", "vat_id"]),
            vat_id: vat.clone(),
            ..Default::default()
        })
        .await
        .expect("clear e-mail");
    assert_eq!((cleared.email.as_str(), cleared.version), ("", 3));
    assert!(crm.find(Key::Email(created.email.clone())).await.expect("find").is_empty());
    assert_eq!(crm.find(Key::VatId(vat)).await.expect("find")[0].id, created.id);
}

async fn a_stale_expected_version_is_aborted(mut crm: Crm) {
    let created = crm.create(new_request("stale")).await.expect("create");
    let rename = |name: &str, expected_version| UpdateCustomerRequest {
        id: created.id.clone(),
        idempotency_key: format!("upd-{}", unique()),
        update_mask: mask(&["name"]),
        name: name.into(),
        expected_version,
        ..Default::default()
    };
    crm.update(rename("First writer", 1)).await.expect("first writer");
    let status = crm.update(rename("Second writer", 1)).await.expect_err("stale");
    assert_eq!(status.code(), Code::Aborted, "{status:?}");
    let details = status.get_error_details();
    let violations = &details.precondition_failure().expect("PreconditionFailure details").violations;
    assert_eq!(violations[0].r#type, "VERSION_MISMATCH");
    assert_eq!(violations[0].subject, created.id);
    let now = crm.get(&created.id).await.expect("get");
    assert_eq!((now.name.as_str(), now.version), ("First writer", 2), "the stale write changed nothing");
    // Without an expected version the write goes ahead.
    assert_eq!(crm.update(rename("Last writer", 0)).await.expect("unchecked").version, 3);
}

async fn racing_updates_from_one_version_let_one_win(crm: Crm) {
    let mut crm = crm;
    let created = crm.create(new_request("race")).await.expect("create");
    let writes = (0..8).map(|n| {
        let mut client = crm.client.clone();
        let id = created.id.clone();
        tokio::spawn(async move {
            client
                .update_customer(UpdateCustomerRequest {
                    id,
                    idempotency_key: format!("race-{n}-{}", unique()),
                    update_mask: mask(&["name"]),
                    name: format!("Writer {n}"),
                    expected_version: 1,
                    ..Default::default()
                })
                .await
        })
    });
    let mut won = 0;
    for write in writes.collect::<Vec<_>>() {
        match write.await.expect("task") {
            Ok(_) => won += 1,
            Err(status) => assert_eq!(status.code(), Code::Aborted, "{status:?}"),
        }
    }
    assert_eq!(won, 1, "exactly one writer read version 1 last");
    assert_eq!(crm.get(&created.id).await.expect("get").version, 2);
}

async fn updates_are_idempotent_per_key_and_no_op_updates_change_nothing(mut crm: Crm) {
    let created = crm.create(new_request("upd-idem")).await.expect("create");
    let cursor = crm.feed_end().await;
    let request = UpdateCustomerRequest {
        id: created.id.clone(),
        idempotency_key: format!("upd-{}", unique()),
        update_mask: mask(&["name"]),
        name: "Renamed once".into(),
        expected_version: 1,
        ..Default::default()
    };
    let updated = crm.update(request.clone()).await.expect("update");
    assert_eq!(updated.version, 2);
    // A replay (an answer lost, say) is applied once, and its stale
    // expected version does not turn it into a conflict.
    let replayed = crm.update(request.clone()).await.expect("replay");
    assert_eq!(replayed, updated);
    assert_eq!(crm.changes_of(&cursor, &created.id).await.len(), 1, "one change for two calls");

    let other = UpdateCustomerRequest { name: "Renamed twice".into(), ..request.clone() };
    let status = crm.update(other).await.expect_err("the key with another request");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");

    // Writing back the values the customer has is no change: no version,
    // no feed entry (a synchronisation must not echo forever).
    let same = crm
        .update(UpdateCustomerRequest { idempotency_key: format!("upd-{}", unique()), expected_version: 2, ..request })
        .await
        .expect("same values");
    assert_eq!(same, updated);
    assert_eq!(crm.changes_of(&cursor, &created.id).await.len(), 1, "still one change");
}

async fn bad_input_is_refused_with_field_violations(mut crm: Crm) {
    let created = crm.create(new_request("bad")).await.expect("create");
    let creates: Vec<(&str, CreateCustomerRequest)> = vec![
        ("idempotency_key", CreateCustomerRequest { idempotency_key: " ".into(), ..new_request("bad") }),
        ("name", CreateCustomerRequest { name: String::new(), ..new_request("bad") }),
        ("email", CreateCustomerRequest { email: "not-an-address".into(), ..new_request("bad") }),
        ("phone", CreateCustomerRequest { phone: "call me".into(), ..new_request("bad") }),
        ("vat_id", CreateCustomerRequest { vat_id: "12345".into(), ..new_request("bad") }),
        ("origin", CreateCustomerRequest { origin: "x".repeat(201), ..new_request("bad") }),
        ("contacts[1].email", {
            let mut r = new_request("bad");
            r.contacts.push(Contact { name: "B".into(), email: "nope".into(), ..Default::default() });
            r
        }),
        ("contacts[0].name", {
            let mut r = new_request("bad");
            r.contacts[0].name = String::new();
            r
        }),
        ("addresses[0].country", {
            let mut r = new_request("bad");
            r.addresses[0].country = "Germany".into();
            r
        }),
        ("addresses[0].city", {
            let mut r = new_request("bad");
            r.addresses[0].city = String::new();
            r
        }),
        ("contacts", {
            let mut r = new_request("bad");
            r.contacts = vec![Contact { name: "Many".into(), ..Default::default() }; 51];
            r
        }),
    ];
    for (field, request) in creates {
        let status = crm.create(request).await.expect_err(field);
        assert_field_violation(&status, field);
    }

    let update = || UpdateCustomerRequest {
        id: created.id.clone(),
        idempotency_key: format!("upd-{}", unique()),
        update_mask: mask(&["name"]),
        name: "Fine".into(),
        ..Default::default()
    };
    let updates: Vec<(&str, UpdateCustomerRequest)> = vec![
        ("id", UpdateCustomerRequest { id: String::new(), ..update() }),
        ("idempotency_key", UpdateCustomerRequest { idempotency_key: String::new(), ..update() }),
        ("update_mask", UpdateCustomerRequest { update_mask: None, ..update() }),
        ("update_mask", UpdateCustomerRequest { update_mask: mask(&["version"]), ..update() }),
        ("name", UpdateCustomerRequest { name: String::new(), ..update() }),
        ("email", UpdateCustomerRequest { update_mask: mask(&["email"]), email: "@nope".into(), ..update() }),
        ("expected_version", UpdateCustomerRequest { expected_version: -1, ..update() }),
    ];
    for (field, request) in updates {
        let status = crm.update(request).await.expect_err(field);
        assert_field_violation(&status, field);
    }
    assert_eq!(crm.get(&created.id).await.expect("get").version, 1, "nothing was written");

    let status = crm.get(" ").await.expect_err("empty id");
    assert_field_violation(&status, "id");
    let status = crm
        .client
        .list_changes(ListChangesRequest { after_cursor: "not-a-cursor".into(), limit: 0 })
        .await
        .expect_err("bad cursor");
    assert_field_violation(&status, "after_cursor");
    let status = crm
        .client
        .list_changes(ListChangesRequest { after_cursor: String::new(), limit: -1 })
        .await
        .expect_err("negative limit");
    assert_field_violation(&status, "limit");
}

async fn the_change_feed_lists_changes_in_order_and_resumes_after_a_cursor(mut crm: Crm) {
    let start = crm.feed_end().await;
    let (nothing, same) = crm.changes(&start, 10).await;
    assert!(nothing.is_empty());
    assert_eq!(same, start, "nothing new: the cursor stays");

    let a = crm.create(CreateCustomerRequest { origin: "sync".into(), ..new_request("feed-a") }).await.expect("a");
    let b = crm
        .create(CreateCustomerRequest {
            idempotency_key: format!("b-{}", unique()),
            name: "Feed B".into(),
            ..Default::default()
        })
        .await
        .expect("b");
    crm.update(UpdateCustomerRequest {
        id: a.id.clone(),
        idempotency_key: format!("upd-{}", unique()),
        update_mask: mask(&["name", "phone"]),
        name: "Feed A renamed".into(),
        phone: a.phone.clone(),
        origin: "ui".into(),
        ..Default::default()
    })
    .await
    .expect("rename a");

    // Two at a time, resuming after each page's cursor.
    let ours = |changes: Vec<CustomerChange>| -> Vec<CustomerChange> {
        changes.into_iter().filter(|c| c.customer_id == a.id || c.customer_id == b.id).collect()
    };
    let mut seen = Vec::new();
    let mut cursor = start.clone();
    loop {
        let (page, next) = crm.changes(&cursor, 2).await;
        assert!(page.len() <= 2, "the limit holds");
        if page.is_empty() {
            assert_eq!(next, cursor);
            break;
        }
        assert_eq!(page.last().map(|c| c.cursor.clone()), Some(next.clone()), "the page ends at its cursor");
        cursor = next;
        seen.extend(page);
    }
    let cursors: Vec<_> = seen.iter().map(|c| c.cursor.clone()).collect();
    let seen = ours(seen);
    assert_eq!(seen.len(), 3, "{seen:?}");

    assert_eq!((seen[0].customer_id.as_str(), seen[0].kind), (a.id.as_str(), ChangeKind::Created as i32));
    assert_eq!(seen[0].version, 1);
    assert_eq!(seen[0].origin, "sync");
    assert_eq!(seen[0].changed_fields, ["name", "email", "phone", "vat_id", "contacts", "addresses"]);

    assert_eq!((seen[1].customer_id.as_str(), seen[1].kind), (b.id.as_str(), ChangeKind::Created as i32));
    assert_eq!(seen[1].changed_fields, ["name"], "only what was set");
    assert_eq!(seen[1].origin, "", "no origin given");

    assert_eq!((seen[2].customer_id.as_str(), seen[2].kind), (a.id.as_str(), ChangeKind::Updated as i32));
    assert_eq!(seen[2].changed_fields, ["name"], "the phone was written unchanged");
    assert_eq!((seen[2].version, seen[2].origin.as_str()), (2, "ui"));
    assert!(seen.iter().all(|c| c.changed_at.is_some()));

    // Resuming from the middle gives the rest, and from the start all.
    let (rest, _) = crm.changes(&seen[0].cursor, 1000).await;
    assert_eq!(ours(rest), seen[1..].to_vec());
    let (all, _) = crm.changes(&start, 1000).await;
    assert_eq!(all.iter().map(|c| c.cursor.clone()).collect::<Vec<_>>(), cursors, "the same pages, the same order");
}

async fn erasing_keeps_the_id_and_nothing_personal(mut crm: Crm) {
    let request = new_request("erase");
    let created = crm.create(request.clone()).await.expect("create");
    let cursor = crm.feed_end().await;
    let erase = EraseCustomerRequest { id: created.id.clone(), origin: "dsr-4711".into() };
    let erased =
        crm.client.erase_customer(erase.clone()).await.expect("erase").into_inner().customer.expect("customer");
    assert_eq!(erased.id, created.id, "the id stays");
    assert_eq!(erased.version, created.version + 1);
    assert!(erased.erased_at.is_some());
    let personal = (
        erased.name.as_str(),
        erased.email.as_str(),
        erased.phone.as_str(),
        erased.vat_id.as_str(),
        erased.contacts.len(),
        erased.addresses.len(),
    );
    assert_eq!(personal, ("", "", "", "", 0, 0), "{erased:?}");
    assert_eq!(crm.get(&created.id).await.expect("get"), erased, "read back as erased");
    assert!(crm.find(Key::Email(request.email.clone())).await.expect("find").is_empty());
    assert!(crm.find(Key::VatId(request.vat_id.clone())).await.expect("find").is_empty());

    // Again: nothing more to do, and no second change.
    let again = crm.client.erase_customer(erase).await.expect("erase again").into_inner().customer;
    assert_eq!(again.as_ref(), Some(&erased));
    let changes = crm.changes_of(&cursor, &created.id).await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!((changes[0].kind, changes[0].version), (ChangeKind::Erased as i32, erased.version));
    assert_eq!(changes[0].origin, "dsr-4711");
    assert_eq!(changes[0].changed_fields, ["name", "email", "phone", "vat_id", "contacts", "addresses"]);

    // An erased customer is not written again, not even by replaying the
    // request that created it.
    let status = crm
        .update(UpdateCustomerRequest {
            id: created.id.clone(),
            idempotency_key: format!("upd-{}", unique()),
            update_mask: mask(&["name"]),
            name: "Back again".into(),
            ..Default::default()
        })
        .await
        .expect_err("erased");
    assert_eq!(status.code(), Code::FailedPrecondition, "{status:?}");
    let details = status.get_error_details();
    assert_eq!(details.precondition_failure().expect("PreconditionFailure").violations[0].r#type, "ERASED");
    let status = crm.create(request).await.expect_err("a replay of the creation");
    assert_eq!(status.code(), Code::AlreadyExists, "{status:?}");

    let status = crm
        .client
        .erase_customer(EraseCustomerRequest { id: "crm_NO_SUCH_CUSTOMER".into(), origin: String::new() })
        .await
        .expect_err("unknown");
    assert_eq!(status.code(), Code::NotFound, "{status:?}");
}

async fn the_credit_limit_is_updated_normalised_fed_and_erased(mut crm: Crm) {
    let created = crm.create(new_request("limit")).await.expect("create");
    assert_eq!(created.credit_limit, "", "unknown until the ERP's is written");
    let cursor = crm.feed_end().await;
    let limit = |value: &str, phone: &str| UpdateCustomerRequest {
        id: created.id.clone(),
        idempotency_key: format!("upd-{}", unique()),
        update_mask: mask(&["credit_limit", "phone"]),
        credit_limit: value.into(),
        phone: phone.into(),
        origin: "master-data".into(),
        ..Default::default()
    };
    let updated = crm.update(limit("5000.5", "+49 40 999999")).await.expect("set the limit");
    assert_eq!(updated.credit_limit, "5000.50", "normalised to two places");
    assert_eq!(updated.version, created.version + 1);
    assert_eq!(crm.get(&created.id).await.expect("get").credit_limit, "5000.50");
    let changes = crm.changes_of(&cursor, &created.id).await;
    assert_eq!(changes.len(), 1, "{changes:?}");
    assert_eq!(changes[0].changed_fields, ["phone", "credit_limit"], "in the order of Customer");

    // The same amount written in another form is no change.
    let same = crm.update(limit("5000.50", "+49 40 999999")).await.expect("same limit");
    assert_eq!(same.version, updated.version);
    for bad in ["abc", "1,5", "-1", "12.345", "1e3"] {
        let status = crm.update(limit(bad, "")).await.expect_err(bad);
        assert_field_violation(&status, "credit_limit");
    }
    let cleared = crm.update(limit("", "+49 40 999999")).await.expect("clear the limit");
    assert_eq!((cleared.credit_limit.as_str(), cleared.version), ("", updated.version + 1));

    crm.update(limit("100", "+49 40 999999")).await.expect("set again");
    let cursor = crm.feed_end().await;
    let erased = crm
        .client
        .erase_customer(EraseCustomerRequest { id: created.id.clone(), origin: String::new() })
        .await
        .expect("erase")
        .into_inner()
        .customer
        .expect("customer");
    assert_eq!(erased.credit_limit, "", "an erasure clears it");
    let changes = crm.changes_of(&cursor, &created.id).await;
    assert_eq!(changes[0].changed_fields.last().map(String::as_str), Some("credit_limit"), "{changes:?}");
}

/// Defines one `#[tokio::test]` per contract test for a backend.
macro_rules! contract_suite {
    ($setup:path) => {
        contract_suite!(@tests $setup;
            customers_are_created_normalised_and_read_back,
            unknown_customers_are_not_found,
            customers_are_found_by_normalised_email_or_vat_id,
            creating_is_idempotent_per_key,
            updates_change_the_masked_fields_and_raise_the_version,
            a_stale_expected_version_is_aborted,
            racing_updates_from_one_version_let_one_win,
            updates_are_idempotent_per_key_and_no_op_updates_change_nothing,
            bad_input_is_refused_with_field_violations,
            the_change_feed_lists_changes_in_order_and_resumes_after_a_cursor,
            erasing_keeps_the_id_and_nothing_personal,
            the_credit_limit_is_updated_normalised_fed_and_erased,
        );
    };
    (@tests $setup:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test]
            async fn $name() {
                super::$name($setup().await).await;
            }
        )*
    };
}

/// The embedded reference CRM on SQLite, a fresh database per test.
mod backend_embedded {
    use super::Crm;

    async fn setup() -> Crm {
        let dir = tempfile::tempdir().expect("tempdir");
        let crm = system_apis::crm::Crm::open(&Default::default(), dir.path()).await.expect("open");
        Crm::new(platform::channel::in_process(crm.routes()), Box::new(dir))
    }

    contract_suite!(setup);
}

/// The embedded reference CRM on PostgreSQL (127.0.0.1:5432, user postgres,
/// trust): a fresh database per test, dropped when the test ends.
mod backend_embedded_postgres {
    use platform::database::ScratchPostgres;

    use super::Crm;

    fn config(db: &ScratchPostgres) -> system_apis::crm::Config {
        system_apis::crm::Config { database_url: Some(db.url()), ..Default::default() }
    }

    async fn setup() -> Crm {
        let db = ScratchPostgres::create("crm_contract").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let crm = system_apis::crm::Crm::open(&config(&db), dir.path()).await.expect("open");
        // The database outlives the test's connections: dropped last.
        Crm::new(platform::channel::in_process(crm.routes()), Box::new((dir, db)))
    }

    contract_suite!(setup);

    /// Two system-tier replicas on one database: the same create sent to
    /// both at once makes one customer, and both answer it; racing version
    /// checks across them let one writer win.
    #[tokio::test]
    async fn two_replicas_on_one_database_keep_keys_and_versions() {
        let db = ScratchPostgres::create("crm_replicas").await;
        let dir = tempfile::tempdir().expect("tempdir");
        let one = system_apis::crm::Crm::open(&config(&db), dir.path()).await.expect("replica 1");
        let two = system_apis::crm::Crm::open(&config(&db), dir.path()).await.expect("replica 2");
        let mut clients = [one, two].map(|crm| Crm::new(platform::channel::in_process(crm.routes()), Box::new(())));

        for _ in 0..5 {
            let request = super::new_request("replica");
            let [c1, c2] = &mut clients;
            let (r1, r2) = tokio::join!(c1.create(request.clone()), c2.create(request.clone()));
            let (r1, r2) = (r1.expect("replica 1"), r2.expect("replica 2"));
            assert_eq!(r1.id, r2.id, "one customer for one key");
            let found = c1.find(erp_connect_proto::crm::v1::find_customers_request::Key::Email(request.email)).await;
            assert_eq!(found.expect("find").len(), 1);

            let rename = |name: &str| erp_connect_proto::crm::v1::UpdateCustomerRequest {
                id: r1.id.clone(),
                idempotency_key: format!("upd-{}", super::unique()),
                update_mask: super::mask(&["name"]),
                name: name.into(),
                expected_version: 1,
                ..Default::default()
            };
            let (u1, u2) = tokio::join!(c1.update(rename("By replica 1")), c2.update(rename("By replica 2")));
            assert_eq!(u1.is_ok() as u8 + u2.is_ok() as u8, 1, "one wins: {u1:?} {u2:?}");
        }
        drop(clients);
        drop(db);
    }
}
