// The search engine allocates and frees a state per step; glibc's malloc spent a third of the
// time doing so (perf), mimalloc a fraction of that.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    onepie::cli::keep_freed_memory();
    onepie::cli::main()
}
