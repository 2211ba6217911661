//! The bearer token of the mutating endpoints, compared in constant time with `subtle`'s
//! `ConstantTimeEq` (the time taken does not depend on where the first differing byte is; it
//! does depend on the length, which `subtle` checks first: a token's length is not a secret
//! worth guarding here, its bytes are).

use subtle::ConstantTimeEq;

/// Why a request is not authorized.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Denied {
    /// No `Authorization: Bearer ...` header.
    Missing,
    /// A token that is not the one.
    Wrong,
}

/// Checks an `Authorization` header against `token`.
pub fn check(header: Option<&[u8]>, token: &str) -> Result<(), Denied> {
    let given = header
        .and_then(|h| h.strip_prefix(b"Bearer "))
        .ok_or(Denied::Missing)?;
    if bool::from(given.ct_eq(token.as_bytes())) {
        Ok(())
    } else {
        Err(Denied::Wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_bearer_token_passes() {
        assert_eq!(check(Some(b"Bearer s3cret"), "s3cret"), Ok(()));
        assert_eq!(check(Some(b"Bearer s3cre"), "s3cret"), Err(Denied::Wrong));
        assert_eq!(check(Some(b"Bearer s3creT"), "s3cret"), Err(Denied::Wrong));
        assert_eq!(check(Some(b"Basic s3cret"), "s3cret"), Err(Denied::Missing));
        assert_eq!(check(None, "s3cret"), Err(Denied::Missing));
    }
}
