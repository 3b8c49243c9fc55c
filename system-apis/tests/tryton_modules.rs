//! A Tryton database without a module erp-connect needs is refused when the
//! system tier starts, with an error naming the module, instead of a tier
//! that starts and fails every order. The run's own Tryton has only `party`
//! (set up by `deploy/tryton/setup.sh` with `MODULES=party`, snapshot
//! `erp_no_sale`).

use system_apis::erp::{BackendKind, Config, Error, backend::tryton::test_server};

#[tokio::test]
async fn a_tryton_without_sale_is_refused_at_start_naming_the_module() {
    let server =
        tokio::task::spawn_blocking(|| test_server::without_sale_config("erp_no_sale")).await.expect("tryton set up");
    let config = Config { backend: BackendKind::Tryton, tryton: Some(server), ..Config::default() };
    let dir = tempfile::tempdir().expect("tempdir");
    let refused = system_apis::SystemTier::start(&config, &Default::default(), dir.path())
        .await
        .err()
        .expect("the tier does not start");
    let system_apis::StartError::Erp(Error::FailedPrecondition { reason, subject, message }) = &refused else {
        panic!("not a missing-module refusal: {refused}")
    };
    assert_eq!((*reason, subject.as_str()), ("MISSING_MODULE", "sale"), "{refused}");
    assert!(message.contains("no activated module sale"), "{message}");
    assert!(refused.to_string().contains("sale"), "the error a user sees names it: {refused}");
}
