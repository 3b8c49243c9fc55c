//! The `erp.v1` gRPC services over any [`Connector`]: request validation,
//! paging, and the one conversion of [`Error`] into `tonic::Status`.

use std::sync::Arc;

use base64::{Engine, engine::general_purpose::URL_SAFE_NO_PAD};
use erp_connect_proto::erp::v1::{
    GetProductRequest, GetStockLevelsRequest, GetStockLevelsResponse, ListProductsRequest, ListProductsResponse,
    Product,
    inventory_service_server::{InventoryService, InventoryServiceServer},
    product_service_server::{ProductService, ProductServiceServer},
};
use tonic::{Code, Request, Response, Status};
use tonic_types::{ErrorDetails, StatusExt};

use super::{Connector, DEFAULT_PAGE_SIZE, Error, MAX_PAGE_SIZE, MAX_SKUS_PER_QUERY};

/// The `erp.v1` services over `connector`.
pub fn routes<C: Connector>(connector: Arc<C>) -> tonic::service::Routes {
    let service = ErpService { connector };
    tonic::service::Routes::new(ProductServiceServer::new(service.clone()))
        .add_service(InventoryServiceServer::new(service))
}

struct ErpService<C> {
    connector: Arc<C>,
}

impl<C> Clone for ErpService<C> {
    fn clone(&self) -> Self {
        Self { connector: self.connector.clone() }
    }
}

const PAGE_TOKEN_PREFIX: &str = "after:";

/// Page size asked for, defaulted and capped as `erp.v1` documents.
fn page_size(requested: i32) -> Result<usize, Error> {
    match requested {
        0 => Ok(DEFAULT_PAGE_SIZE),
        n if n < 0 => Err(Error::InvalidArgument { field: "page_size", message: "must not be negative".into() }),
        n => Ok(usize::try_from(n).unwrap_or(MAX_PAGE_SIZE).min(MAX_PAGE_SIZE)),
    }
}

fn encode_page_token(last_sku: &str) -> String {
    URL_SAFE_NO_PAD.encode(format!("{PAGE_TOKEN_PREFIX}{last_sku}"))
}

fn decode_page_token(token: &str) -> Result<Option<String>, Error> {
    if token.is_empty() {
        return Ok(None);
    }
    let invalid = || Error::InvalidArgument { field: "page_token", message: "not a token from a previous page".into() };
    let bytes = URL_SAFE_NO_PAD.decode(token).map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let sku = text.strip_prefix(PAGE_TOKEN_PREFIX).ok_or_else(invalid)?;
    Ok(Some(sku.to_owned()))
}

#[tonic::async_trait]
impl<C: Connector> ProductService for ErpService<C> {
    #[tracing::instrument(skip_all, fields(rpc = "erp.v1.ProductService/ListProducts"))]
    async fn list_products(
        &self,
        request: Request<ListProductsRequest>,
    ) -> Result<Response<ListProductsResponse>, Status> {
        let req = request.into_inner();
        let limit = page_size(req.page_size)?;
        let after = decode_page_token(&req.page_token)?;
        let page = self.connector.list_products(after.as_deref(), limit).await?;
        let next_page_token = match (page.more, page.products.last()) {
            (true, Some(last)) => encode_page_token(&last.sku),
            _ => String::new(),
        };
        Ok(Response::new(ListProductsResponse { products: page.products, next_page_token }))
    }

    #[tracing::instrument(skip_all, fields(rpc = "erp.v1.ProductService/GetProduct"))]
    async fn get_product(&self, request: Request<GetProductRequest>) -> Result<Response<Product>, Status> {
        let sku = request.into_inner().sku;
        if sku.is_empty() {
            return Err(Error::InvalidArgument { field: "sku", message: "must not be empty".into() }.into());
        }
        Ok(Response::new(self.connector.get_product(&sku).await?))
    }
}

#[tonic::async_trait]
impl<C: Connector> InventoryService for ErpService<C> {
    #[tracing::instrument(skip_all, fields(rpc = "erp.v1.InventoryService/GetStockLevels"))]
    async fn get_stock_levels(
        &self,
        request: Request<GetStockLevelsRequest>,
    ) -> Result<Response<GetStockLevelsResponse>, Status> {
        let skus = request.into_inner().skus;
        if skus.len() > MAX_SKUS_PER_QUERY {
            return Err(Error::InvalidArgument {
                field: "skus",
                message: format!("at most {MAX_SKUS_PER_QUERY} SKUs per call"),
            }
            .into());
        }
        let levels = self.connector.stock_levels(&skus).await?;
        Ok(Response::new(GetStockLevelsResponse { levels }))
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
            Error::ProductNotFound { sku } => Status::with_error_details(
                Code::NotFound,
                format!("no product with SKU {sku:?}"),
                ErrorDetails::with_resource_info("erp.v1.Product", sku, "", ""),
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
}
