//! The real `api` binary as a child process whose stdout the test reads (the address
//! line, `--dev`'s tokens), for start-up rules and metrics of a process of its own.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use crate::support::harness::Isolation;

/// Starts the `api` binary on `isolation`, with or without `JWT_SECRET`.
pub fn spawn_api(isolation: &Isolation, jwt_secret: bool, extra: &[&str]) -> Child {
    let mut command = Command::new(env!("CARGO_BIN_EXE_api"));
    command.args(extra).env_remove("JWT_SECRET").env("RUST_LOG", "warn");
    for (name, value) in isolation.api_env() {
        if name != "JWT_SECRET" || jwt_secret {
            command.env(name, value);
        }
    }
    command.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().expect("api spawns")
}

/// Reads the address line and then `extra_lines` more lines of the child's stdout.
pub fn read_address(child: &mut Child, extra_lines: usize) -> (String, Vec<String>) {
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().expect("api prints its address").unwrap();
    let address = first.strip_prefix("listening on http://").expect("address line").to_owned();
    let rest = lines.take(extra_lines).map_while(Result::ok).collect();
    (address, rest)
}
