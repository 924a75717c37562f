//! The `tollgate` binary; everything it does is in the library (`cli`).

fn main() {
    std::process::exit(tollgate::run_command_line());
}
