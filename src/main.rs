use clap::Parser;

fn main() {
    retort::cpu_threads::configure();
    retort::malloc_tuning::configure();
    // Behave like other command-line tools when output goes to `head` or a closed pipe:
    // end quietly instead of panicking on a failed print.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let cli = retort::cli::Cli::parse();
    match retort::cli::main_with(cli) {
        Ok(code) => std::process::exit(code),
        Err(e) => {
            retort::ui_restore_terminal();
            eprintln!("error: {e:#}");
            std::process::exit(2);
        }
    }
}
