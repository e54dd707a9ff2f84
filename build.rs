//! Generates the gRPC code from `proto/stampede/v1/stampede.proto` with protox (a
//! protobuf compiler in Rust), so no `protoc` is needed. The encoded descriptor set is
//! written beside the code for server reflection.

use std::path::PathBuf;

use prost::Message;

const PROTO: &str = "proto/stampede/v1/stampede.proto";

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed={PROTO}");
    let descriptors = protox::compile([PROTO], ["proto"])?;
    let out = PathBuf::from(std::env::var("OUT_DIR")?);
    std::fs::write(out.join("stampede_descriptor.bin"), descriptors.encode_to_vec())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(descriptors)?;
    Ok(())
}
