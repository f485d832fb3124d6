use clap::Parser;

fn main() {
    // A user's mistake is not a crash: with RUST_BACKTRACE=1 set, candle and anyhow would
    // append a stack backtrace to every error message (candle even puts it in the message).
    // RUST_LIB_BACKTRACE=0 turns off those library backtraces while panics still print
    // theirs; set RUST_LIB_BACKTRACE=1 yourself to get them back. Done first, before any
    // thread exists or any error is made.
    if std::env::var_os("RUST_LIB_BACKTRACE").is_none() {
        std::env::set_var("RUST_LIB_BACKTRACE", "0");
    }
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
            retort::ui::tui::restore_if_active();
            eprintln!("error: {}", retort::error_text::describe(&e));
            std::process::exit(2);
        }
    }
}
