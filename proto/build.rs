//! Compiles `throng/v1/*.proto` with the pure-Rust `protox` compiler (no
//! system `protoc` needed) and generates prost messages and tonic
//! clients/servers from the resulting descriptor set. The encoded descriptor
//! set is also written to OUT_DIR for gRPC reflection.

use std::path::PathBuf;

const PROTOS: &[&str] = &[
    "throng/v1/message.proto",
    "throng/v1/handler.proto",
    "throng/v1/ingest.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=throng");
    let out_dir = PathBuf::from(std::env::var("OUT_DIR")?);

    let mut compiler = protox::Compiler::new(["."])?;
    compiler
        .include_source_info(true)
        .include_imports(true)
        .open_files(PROTOS)?;
    std::fs::write(
        out_dir.join("throng_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;

    tonic_prost_build::configure()
        .bytes(".")
        .emit_rerun_if_changed(false)
        .compile_fds(compiler.file_descriptor_set())?;
    Ok(())
}
