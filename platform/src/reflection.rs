//! gRPC server reflection in both versions a client may speak:
//! `grpc.reflection.v1` (current grpcurl, grpc-go and Java clients) and
//! `grpc.reflection.v1alpha` (Python's grpcio-reflection, older grpcurl, and
//! GUI clients built on them, which speak only it). Both answer from the same
//! descriptor sets and list the same services, the reflection services
//! themselves included, so either kind of client discovers the same API.

use tonic::service::Routes;
use tonic_reflection::server::{Builder, Error};

/// The reflection services, listed beside a tier's own.
pub const SERVICE_NAMES: [&str; 2] =
    ["grpc.reflection.v1.ServerReflection", "grpc.reflection.v1alpha.ServerReflection"];

/// `routes` with both reflection services added: they describe the files of
/// `descriptor_sets` (encoded `FileDescriptorSet`s) and list `services` and
/// [`SERVICE_NAMES`].
pub fn add(routes: Routes, descriptor_sets: &[&'static [u8]], services: &[&str]) -> Result<Routes, Error> {
    // A builder is consumed by building, so each version gets its own.
    let builder = || {
        let mut builder = Builder::configure()
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_reflection::pb::v1alpha::FILE_DESCRIPTOR_SET);
        for set in descriptor_sets {
            builder = builder.register_encoded_file_descriptor_set(set);
        }
        for name in services.iter().chain(&SERVICE_NAMES) {
            builder = builder.with_service_name(*name);
        }
        builder
    };
    Ok(routes.add_service(builder().build_v1()?).add_service(builder().build_v1alpha()?))
}
