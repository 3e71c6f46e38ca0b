//! Generates the gRPC code for the Deephaven subset dhbus speaks and for
//! dhbus's own agent API. protoc comes from `protoc-bin-vendored` so a fresh
//! machine needs no system protobuf compiler.
fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protoc = protoc_bin_vendored::protoc_bin_path()?;
    std::env::set_var("PROTOC", protoc);
    tonic_prost_build::configure()
        .build_server(false)
        .compile_protos(
            &["proto/deephaven/backplane.proto", "proto/deephaven/console.proto"],
            &["proto/deephaven"],
        )?;
    tonic_prost_build::configure()
        .build_server(true)
        .compile_protos(&["proto/dhbus/v1/bus.proto"], &["proto"])?;
    println!("cargo:rerun-if-changed=proto");
    Ok(())
}
