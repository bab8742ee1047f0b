//! Generates the `lifeboat.v1` Rust types with prost, and their canonical protobuf JSON mapping
//! (serde) with pbjson, using the protoc shipped by `protoc-bin-vendored` so no system protoc
//! is needed.
fn main() -> std::io::Result<()> {
    let protoc = protoc_bin_vendored::protoc_bin_path().map_err(std::io::Error::other)?;
    let include = protoc_bin_vendored::include_path().map_err(std::io::Error::other)?;
    std::env::set_var("PROTOC", protoc);
    println!("cargo:rerun-if-changed=lifeboat");
    let descriptors = std::path::PathBuf::from(std::env::var("OUT_DIR").map_err(std::io::Error::other)?)
        .join("lifeboat_descriptors.bin");
    prost_build::Config::new()
        .file_descriptor_set_path(&descriptors)
        // Well-known types come from pbjson-types, which carry their JSON mapping too.
        .compile_well_known_types()
        .extern_path(".google.protobuf", "::pbjson_types")
        .compile_protos(
            &[
                "lifeboat/v1/resource.proto",
                "lifeboat/v1/backup.proto",
                "lifeboat/v1/restore.proto",
                "lifeboat/v1/state.proto",
            ],
            &[std::path::PathBuf::from("."), include],
        )?;
    let descriptor_set = std::fs::read(descriptors)?;
    pbjson_build::Builder::new().register_descriptors(&descriptor_set)?.build(&[".lifeboat"])?;
    Ok(())
}
