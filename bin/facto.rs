//! The `facto` binary: everything lives in the library; this only hands over the exit code.

fn main() {
    // Output piped into `head` and the like ends quietly, as for any Unix tool, instead of
    // panicking on the closed pipe.
    // SAFETY: restores the default disposition of one signal before any thread starts.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    std::process::exit(facto::cli::main());
}
