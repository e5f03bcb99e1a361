//! Links the extension against libtorch and torch's Python bindings (`libtorch_python.so`, for the
//! `THPVariable` symbols the zero-copy tensor bridge uses). Both resolve by SONAME to the copies that
//! `import torch` already loaded; the rpath finds them when the package sits beside torch in site-packages.
fn main() {
    println!("cargo:rerun-if-env-changed=LIBTORCH");
    let lib = std::env::var("DEP_TCH_LIBTORCH_LIB")
        .or_else(|_| std::env::var("LIBTORCH").map(|root| format!("{root}/lib")))
        .expect("torch-sys reports libtorch's library directory (or LIBTORCH is set)");
    println!("cargo:rustc-link-search=native={lib}");
    // A dependency's link args do not reach a cdylib, and --as-needed would drop libraries only reached through
    // symbols resolved at load time.
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    for library in ["torch_python", "torch", "torch_cpu", "c10"] {
        println!("cargo:rustc-link-arg=-l{library}");
    }
    println!("cargo:rustc-link-arg=-Wl,-rpath,$ORIGIN/../torch/lib");
}
