//! A scripted system API for the steps' unit tests: every gRPC call is
//! answered with the next answer scripted for its method (a message or a
//! status) and recorded, so a test can check what a step sent. A fake,
//! because a real system API does not fail on demand; the real ones (the
//! embedded ERP, Tryton, the payments sandbox) run the steps end to end in
//! the workspace's `tests/`.

use std::{
    collections::{HashMap, VecDeque},
    sync::{Arc, Mutex},
    time::Duration,
};

use bytes::Bytes;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use platform::channel::{GrpcChannel, TransportError};
use prost::Message;
use tonic::{Status, body::Body};
use tower::util::BoxCloneSyncService;

use crate::{
    catalog::prices::PriceList,
    order_to_cash::{
        Settings,
        order::{Action, CustomerRef, Line, Order, Payment, Progress, Status as OrderStatus},
        saga::{Engine, Systems},
        store::Store,
    },
};
use tokio_util::sync::CancellationToken;

type Answer = Result<Vec<u8>, Status>;

/// See the module documentation.
#[derive(Default)]
pub struct Fake {
    script: Mutex<HashMap<String, VecDeque<Answer>>>,
    calls: Mutex<Vec<(String, Vec<u8>)>>,
}

impl Fake {
    /// A fake with nothing scripted: every call is `UNIMPLEMENTED`.
    pub fn new() -> Arc<Self> {
        Arc::default()
    }

    fn push(&self, method: &str, answer: Answer) -> &Self {
        self.script.lock().expect("script").entry(method.to_owned()).or_default().push_back(answer);
        self
    }

    /// The next call of `method` (e.g. `CreateSalesOrder`) answers `message`.
    pub fn answer(&self, method: &str, message: impl Message) -> &Self {
        self.push(method, Ok(message.encode_to_vec()))
    }

    /// The next call of `method` fails with `status`.
    pub fn fail(&self, method: &str, status: Status) -> &Self {
        self.push(method, Err(status))
    }

    /// The requests `method` received, decoded.
    pub fn requests<M: Message + Default>(&self, method: &str) -> Vec<M> {
        let calls = self.calls.lock().expect("calls");
        calls
            .iter()
            .filter(|(m, _)| m == method)
            .map(|(_, body)| M::decode(body.as_slice()).expect("request"))
            .collect()
    }

    async fn serve(&self, request: http::Request<Body>) -> http::Response<Body> {
        let method = request.uri().path().rsplit('/').next().unwrap_or_default().to_owned();
        let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
        // A gRPC message: a flag byte, a 4-byte length, the protobuf bytes.
        self.calls.lock().expect("calls").push((method.clone(), body.get(5..).unwrap_or_default().to_vec()));
        let next = self.script.lock().expect("script").get_mut(&method).and_then(VecDeque::pop_front);
        match next.unwrap_or_else(|| Err(Status::unimplemented(format!("nothing scripted for {method}")))) {
            Ok(message) => {
                let mut frame = vec![0];
                frame.extend_from_slice(&u32::try_from(message.len()).expect("small").to_be_bytes());
                frame.extend_from_slice(&message);
                let mut trailers = http::HeaderMap::new();
                trailers.insert("grpc-status", http::HeaderValue::from_static("0"));
                let frames = [Ok::<_, Status>(Frame::data(Bytes::from(frame))), Ok(Frame::trailers(trailers))];
                let body = StreamBody::new(futures_util::stream::iter(frames));
                http::Response::builder()
                    .header("content-type", "application/grpc")
                    .body(Body::new(body))
                    .expect("response")
            }
            Err(status) => status.into_http(),
        }
    }

    /// A channel to this fake.
    pub fn channel(self: &Arc<Self>) -> GrpcChannel {
        let fake = self.clone();
        BoxCloneSyncService::new(tower::service_fn(move |request: http::Request<Body>| {
            let fake = fake.clone();
            async move { Ok::<_, TransportError>(fake.serve(request).await) }
        }))
    }

    /// System APIs and a price list over this fake.
    pub fn systems(self: &Arc<Self>) -> (Systems, Arc<PriceList>) {
        let timeout = Duration::from_secs(5);
        (Systems::new(self.channel(), timeout), PriceList::new(self.channel(), timeout))
    }
}

/// An engine over `fake` with a saga store of its own in `dir`, a retry
/// budget of 2 and millisecond backoffs, its worker running until `stop`.
pub async fn engine(fake: &Arc<Fake>, dir: &tempfile::TempDir, stop: &CancellationToken) -> Arc<Engine> {
    let store = Store::open(&format!("sqlite://{}", dir.path().join("process.db").display())).await.expect("store");
    let (systems, prices) = fake.systems();
    let settings = Settings {
        retry_budget: 2,
        backoff_base: Duration::from_millis(2),
        backoff_cap: Duration::from_millis(10),
        poll_interval: Duration::from_millis(10),
        ..Settings::default()
    };
    let engine = Arc::new(Engine::new(store, systems, settings, prices));
    tokio::spawn(engine.clone().run_worker(stop.clone()));
    engine
}

/// An accepted order of one line (3 × WIDGET-1 at 12.50) for `web:alice`,
/// paid with `payment`, with the customer resolved as `cus_1`.
pub fn order(payment: Payment) -> Order {
    Order {
        id: "ord_1".into(),
        tenant: "web".into(),
        customer_id: "cus_1".into(),
        customer: Some(CustomerRef { external_id: "web:alice".into(), ..CustomerRef::default() }),
        customer_external_id: "web:alice".into(),
        external_ref: String::new(),
        currency: "EUR".into(),
        lines: vec![Line {
            sku: "WIDGET-1".into(),
            quantity: 3,
            unit_price: "12.50".into(),
            amount: "37.50".into(),
            custom_fields: Default::default(),
        }],
        total: "37.50".into(),
        custom_fields: Default::default(),
        payment,
        status: OrderStatus::Accepted,
        timeline: vec![],
        created_at: 0,
        updated_at: 0,
        progress: Progress { customer_resolved: true, ..Progress::default() },
    }
}

/// A card order.
pub fn card_order() -> Order {
    order(Payment::Card { token: "tok_visa".into() })
}

/// Runs `step` on `order` against `fake`; returns the result and the effects' event types.
pub async fn run(fake: &Arc<Fake>, step: Action, order: &mut Order) -> (Result<(), super::StepError>, Vec<String>) {
    let (systems, prices) = fake.systems();
    let settings = Settings::default();
    let cx = super::Context::new(&systems, &prices, &settings, step, order);
    let mut effects = crate::order_to_cash::saga::Effects::default();
    let result = super::run(step, &cx, order, &mut effects).await;
    (result, effects.events.into_iter().map(|e| e.event_type).collect())
}

/// The order's timeline steps.
pub fn steps(order: &Order) -> Vec<&str> {
    order.timeline.iter().map(|t| t.step.as_str()).collect()
}
