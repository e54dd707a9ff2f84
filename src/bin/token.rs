//! Mints a Stampede JWT: `token --role admin|user --sub ID [--secret S] [--ttl 1h]`.

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
    /// HS256 secret; the same as the API's.
    #[arg(long, env = "JWT_SECRET", hide_env_values = true)]
    secret: Secret,
    /// Lifetime in human form (`15m`, `1h`).
    #[arg(long, env = "TOKEN_TTL", default_value = "1h", value_parser = parse_duration)]
    ttl: std::time::Duration,
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
    println!("{}", Jwt::new(&config.secret).mint(&subject, config.role, config.ttl));
    std::process::ExitCode::SUCCESS
}
