//! `orderly`: the standalone order server and command-line tool.

fn main() -> std::process::ExitCode {
    eprintln!(
        "orderly {}: the order server is not built yet (see the open issues); \
         the library and its tests are: cargo test --workspace",
        env!("CARGO_PKG_VERSION")
    );
    std::process::ExitCode::FAILURE
}
