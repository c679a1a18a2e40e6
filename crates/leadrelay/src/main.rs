// mimalloc: the ingest path allocates many small strings; the system
// allocator spent ~15% of CPU in malloc/free under load.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    leadrelay::cli::main()
}
