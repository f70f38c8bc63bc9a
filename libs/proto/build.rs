//! Compiles `proto/sextant/v1/*.proto` into the `pb` module, and writes their encoded
//! `FileDescriptorSet` (with `google/protobuf/timestamp.proto`, which they import) for server
//! reflection. protoc and the well-known types come from the `protoc-bin-vendored` crate, so the
//! build needs no system package; set `PROTOC` to use another protoc.

use std::path::PathBuf;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let root = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR")?).join("../../proto");
    let mut protos = Vec::new();
    for entry in std::fs::read_dir(root.join("sextant/v1"))? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "proto") {
            protos.push(path);
        }
    }
    protos.sort();
    println!("cargo:rerun-if-env-changed=PROTOC");
    println!("cargo:rerun-if-changed={}", root.join("sextant/v1").display());

    let protoc = match std::env::var_os("PROTOC") {
        Some(p) => PathBuf::from(p),
        None => protoc_bin_vendored::protoc_bin_path()?,
    };
    let descriptor_set = PathBuf::from(std::env::var("OUT_DIR")?).join("sextant_descriptor.bin");
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(protoc);
    tonic_prost_build::configure().file_descriptor_set_path(descriptor_set).compile_with_config(
        config,
        &protos,
        &[root, protoc_bin_vendored::include_path()?],
    )?;
    Ok(())
}
