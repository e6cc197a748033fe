//! Who is asking, and what they may do. API tokens carry a role and (except the bootstrap
//! admin) a project; [`Principal::may`] says whether a caller has a role (the API's route
//! table says which role a route needs). Secrets are random, shown once, and stored only as
//! SHA-256 hashes.

use sha2::{Digest, Sha256};
use uuid::Uuid;

spelled_enum!(
    /// Roles, weakest first: each includes what the ones before it may do.
    Role {
        /// Reads everything of its project.
        Viewer => "viewer",
        /// Also triggers, cancels and retries runs, decides approvals, posts events.
        Operator => "operator",
        /// Also manages agents, workflows, tokens (and, deployment-wide, projects).
        Admin => "admin",
    }
);
stored_text!(Role);

/// The caller behind a valid token.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Principal {
    pub token_id: Uuid,
    pub name: String,
    pub role: Role,
    /// `None`: every project (the bootstrap admin).
    pub project_id: Option<i64>,
}

impl Principal {
    pub fn may(&self, needed: Role) -> bool {
        self.role >= needed
    }

    /// How the caller appears in runs and approvals (`triggeredBy`, `decidedBy`).
    pub fn identity(&self) -> String {
        format!("token:{}", self.name)
    }

    /// The project a request works in: the one it names, which a project token may only name
    /// if it is its own; without one, the token's project (or project 1).
    pub fn project(&self, asked: Option<i64>) -> Result<i64, String> {
        match (self.project_id, asked) {
            (Some(own), Some(asked)) if own != asked => Err(format!(
                "this token belongs to project {own} and cannot act on project {asked}"
            )),
            (Some(own), _) => Ok(own),
            (None, Some(asked)) => Ok(asked),
            (None, None) => Ok(1),
        }
    }
}

/// A new secret: `orch_` and 43 URL-safe characters (256 random bits).
pub fn token_generate() -> String {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).expect("the operating system provides random bytes");
    let mut s = String::with_capacity(48);
    s.push_str("orch_");
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    // Base64url without padding, by hand: 32 bytes are 43 characters.
    let mut acc: u32 = 0;
    let mut bits = 0;
    for b in bytes {
        acc = (acc << 8) | b as u32;
        bits += 8;
        while bits >= 6 {
            bits -= 6;
            s.push(ALPHABET[((acc >> bits) & 63) as usize] as char);
        }
    }
    if bits > 0 {
        s.push(ALPHABET[((acc << (6 - bits)) & 63) as usize] as char);
    }
    s
}

/// What is stored in place of a secret.
pub fn token_hash(secret: &str) -> String {
    let digest = Sha256::digest(secret.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn secrets_are_long_random_and_hashed() {
        let a = token_generate();
        let b = token_generate();
        assert_ne!(a, b);
        assert_eq!(a.len(), 5 + 43);
        assert!(
            a[5..]
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        );
        assert_eq!(token_hash(&a).len(), 64);
        assert_eq!(token_hash(&a), token_hash(&a));
        assert_ne!(token_hash(&a), token_hash(&b));
    }

    #[test]
    fn roles_include_the_weaker_ones() {
        let p = |role| Principal {
            token_id: Uuid::nil(),
            name: "t".into(),
            role,
            project_id: Some(2),
        };
        assert!(p(Role::Admin).may(Role::Operator));
        assert!(p(Role::Operator).may(Role::Viewer));
        assert!(!p(Role::Viewer).may(Role::Operator));
        assert!(!p(Role::Operator).may(Role::Admin));
    }

    #[test]
    fn project_tokens_stay_in_their_project() {
        let scoped = Principal {
            token_id: Uuid::nil(),
            name: "t".into(),
            role: Role::Admin,
            project_id: Some(2),
        };
        assert_eq!(scoped.project(None), Ok(2));
        assert_eq!(scoped.project(Some(2)), Ok(2));
        assert!(scoped.project(Some(1)).is_err());
        let global = Principal {
            project_id: None,
            ..scoped
        };
        assert_eq!(global.project(None), Ok(1));
        assert_eq!(global.project(Some(7)), Ok(7));
    }
}
