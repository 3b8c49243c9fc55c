//! `POST /ops/v1/shipments/{id}/complete`: marks a shipment done in the
//! ERP, standing in for the warehouse (the embedded ERP has none). The
//! order turns `shipped`, then `completed` once paid, as the ERP's change
//! feed reaches the process tier, so the answer is the shipment, not the
//! order.

use axum::extract::State;

use crate::body::Json;
use erp_connect_proto::order_to_cash::v1::{CompleteShipmentRequest, CompleteShipmentResponse};
use serde::Serialize;

use crate::{
    Upstreams,
    error::Error,
    extract::{Caller, ObjectId},
    openapi::Refusals,
    orders,
};

/// A shipment after completion.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct ShipmentView {
    /// The ERP shipment id.
    pub shipment_id: String,
    /// Our order id.
    pub order_id: String,
    /// The ERP's state of the shipment, `done`.
    pub state: String,
}

impl From<CompleteShipmentResponse> for ShipmentView {
    fn from(r: CompleteShipmentResponse) -> Self {
        Self { shipment_id: r.shipment_id, order_id: r.order_id, state: r.state }
    }
}

/// Marks a shipment done in the ERP, standing in for the warehouse.
#[utoipa::path(post, path = "/shipments/{id}/complete", tag = "ops", operation_id = "complete_shipment",
    params(("id" = String, Path, description = "ERP shipment id, from an order's erp.shipments")),
    responses(
        (status = 200, description = "Done", body = ShipmentView),
        (status = 404, description = "No such shipment"),
        (status = 409, description = "The shipment cannot be completed"),
        Refusals
    ),
    security(("bearer" = ["ops"]), ("api_key" = ["ops"]))
)]
#[tracing::instrument(skip_all, fields(shipment_id = %id))]
pub async fn complete(
    State(upstreams): State<Upstreams>,
    Caller(principal): Caller,
    ObjectId(id): ObjectId,
) -> Result<Json<ShipmentView>, Error> {
    let done = orders::client(&upstreams)
        .complete_shipment(CompleteShipmentRequest { shipment_id: id })
        .await
        .map_err(Error::lookup("no such shipment"))?
        .into_inner();
    tracing::info!(operator = %principal.subject, order_id = %done.order_id, "shipment completed");
    Ok(Json(ShipmentView::from(done)))
}
