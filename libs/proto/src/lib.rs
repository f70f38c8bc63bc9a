//! Sextant's API surface shared by every service: the gRPC definitions generated from
//! `proto/sextant/v1`, and [`ErrorKind`], the one place where a failure becomes an HTTP or a
//! gRPC status.

pub mod error;
pub mod grpc;
pub mod http;

/// Messages, server traits and clients (`RunService`, `FeedbackService`,
/// `AnnotationQueueService`, `DatasetService`, `EvaluationService`, `PromptService`), generated
/// from `proto/sextant/v1/*.proto` (package `sextant.v1`). Time fields are
/// [`prost_types::Timestamp`]; [`grpc::timestamp_to_pb`] and [`grpc::timestamp_from_pb`] convert.
pub mod pb {
    tonic::include_proto!("sextant.v1");
}

/// The encoded `google.protobuf.FileDescriptorSet` of `proto/sextant/v1` and what it imports,
/// served by gRPC server reflection (so `grpcurl` and friends need no local `.proto` files).
pub const FILE_DESCRIPTOR_SET: &[u8] = tonic::include_file_descriptor_set!("sextant_descriptor");

pub use error::{ApiError, ErrorKind};
pub use grpc::truncate;
/// The well-known types the generated code uses (`prost_types::Timestamp`), for callers that
/// build messages.
pub use prost_types;

#[cfg(test)]
mod tests {
    use prost::Message;

    #[test]
    fn the_descriptor_set_holds_every_proto_and_what_they_import() {
        let set = prost_types::FileDescriptorSet::decode(super::FILE_DESCRIPTOR_SET).expect("a valid FileDescriptorSet");
        let mut names: Vec<&str> = set.file.iter().filter_map(|f| f.name.as_deref()).collect();
        names.sort_unstable();
        assert_eq!(
            names,
            [
                "google/protobuf/timestamp.proto",
                "sextant/v1/datasets.proto",
                "sextant/v1/evaluation.proto",
                "sextant/v1/feedback.proto",
                "sextant/v1/prompts.proto",
                "sextant/v1/runs.proto"
            ]
        );
        for f in set.file.iter().filter(|f| f.package.as_deref() == Some("sextant.v1")) {
            let o = f.options.as_ref().expect("file options");
            assert_eq!(o.java_package.as_deref(), Some("dev.sextant.v1"), "{:?}", f.name);
            assert_eq!(o.java_multiple_files, Some(true), "{:?}", f.name);
            assert!(o.go_package.as_deref().is_some_and(|g| g.ends_with(";sextantv1")), "{:?}", f.name);
            assert_eq!(o.csharp_namespace.as_deref(), Some("Sextant.V1"), "{:?}", f.name);
        }
    }
}
