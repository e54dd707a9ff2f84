//! Mints a Stampede JWT: `token --role admin|user --sub ID [--secret-file PATH|- | env JWT_SECRET | --secret S] [--ttl 1h]`.

use std::io::Read;
use std::path::PathBuf;

use clap::Parser;
use stampede::auth::{Jwt, Role};
use stampede::config::{Secret, parse_duration};
use stampede::ids::UserId;

/// Prints one HS256 JWT and a newline.
#[derive(Debug, Parser)]
#[command(name = "token", about = "Mint a Stampede JWT")]
struct TokenConfig {
    /// Role of the token.
    #[arg(long, env = "TOKEN_ROLE", value_enum)]
    role: Role,
    /// Subject (user id), 1..128 characters.
    #[arg(long, env = "TOKEN_SUB")]
    sub: String,
    /// File holding the HS256 secret (the API's `JWT_SECRET`), `-` for standard input; one
    /// trailing newline is dropped. Unlike `--secret`, it never shows in `ps`; it wins over
    /// `JWT_SECRET`.
    #[arg(long, env = "TOKEN_SECRET_FILE")]
    secret_file: Option<PathBuf>,
    /// HS256 secret; the same as the API's. On the command line it shows in `ps` to every
    /// user of the machine: prefer `JWT_SECRET` or `--secret-file`.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true, required_unless_present = "secret_file")]
    secret: Option<Secret>,
    /// Lifetime in human form (`15m`, `1h`).
    #[arg(long, env = "TOKEN_TTL", default_value = "1h", value_parser = parse_duration)]
    ttl: std::time::Duration,
}

/// Reads a secret from `path`, or from standard input for `-`.
fn read_secret(path: &PathBuf) -> Result<Secret, String> {
    let mut text = String::new();
    let read = if path.as_os_str() == "-" {
        std::io::stdin().read_to_string(&mut text).map(drop)
    } else {
        std::fs::File::open(path).and_then(|mut file| file.read_to_string(&mut text)).map(drop)
    };
    read.map_err(|error| format!("cannot read the secret from {}: {error}", path.display()))?;
    let secret = text.strip_suffix('\n').map(|text| text.strip_suffix('\r').unwrap_or(text)).unwrap_or(&text);
    secret.parse().map_err(|error| format!("secret in {}: {error}", path.display()))
}

fn main() -> std::process::ExitCode {
    let config = TokenConfig::parse();
    let subject = match UserId::parse(&config.sub) {
        Ok(subject) => subject,
        Err(message) => {
            eprintln!("error: invalid --sub: {message}");
            return std::process::ExitCode::from(2);
        }
    };
    let secret = match (&config.secret_file, config.secret) {
        (Some(path), _) => match read_secret(path) {
            Ok(secret) => secret,
            Err(message) => {
                eprintln!("error: {message}");
                return std::process::ExitCode::from(2);
            }
        },
        (None, Some(secret)) => secret,
        (None, None) => {
            eprintln!("error: give the secret with --secret-file PATH (or -), JWT_SECRET or --secret");
            return std::process::ExitCode::from(2);
        }
    };
    println!("{}", Jwt::new(&secret).mint(&subject, config.role, config.ttl));
    std::process::ExitCode::SUCCESS
}
