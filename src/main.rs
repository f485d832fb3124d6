use clap::Parser;

fn main() {
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
