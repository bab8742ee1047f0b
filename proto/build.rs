//! Generates the `lifeboat.v1` Rust types with prost, using the protoc shipped by
//! `protoc-bin-vendored` so no system protoc is needed.
fn main() -> std::io::Result<()> {
    let protoc = protoc_bin_vendored::protoc_bin_path().map_err(std::io::Error::other)?;
    let include = protoc_bin_vendored::include_path().map_err(std::io::Error::other)?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=lifeboat");
    prost_build::Config::new().compile_protos(&["lifeboat/v1/restore.proto"], &[std::path::PathBuf::from("."), include])
}
