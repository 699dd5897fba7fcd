//! Compiles the gRPC service definition (`proto/inference.proto`) into Rust at build time.
//! protox parses it in Rust, so no `protoc` binary is downloaded or needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto = "proto/inference.proto";
    println!("cargo:rerun-if-changed={proto}");
    let descriptors = protox::compile([proto], ["proto"])?;
    tonic_prost_build::configure()
        .build_transport(false)
        .compile_fds(descriptors)?;
    Ok(())
}
