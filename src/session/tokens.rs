//! The tokens a session keeps server-side for refresh and logout.

/// Tokens kept server-side for refresh and logout.
#[derive(Debug, Clone)]
pub struct Tokens {
    pub id_token: Option<IdToken>,
    pub refresh_token: Option<Box<str>>,
    /// Unix time the access token expires.
    pub access_exp: u64,
    /// How many refreshes these tokens are from the login: a replica takes
    /// tokens from the shared record only when they are newer.
    pub generation: u64,
}

/// An ID token kept for `id_token_hint` at logout, in three quarters of its
/// size: its three base64url parts decoded. A token that would not come
/// back byte for byte (padding, stray bits, not three parts) is kept as
/// it came.
#[derive(Clone, PartialEq, Eq)]
pub struct IdToken {
    bytes: Box<[u8]>,
    /// Where the decoded payload and signature start; `RAW` when `bytes`
    /// is the token's text.
    splits: [u32; 2],
}

impl IdToken {
    const RAW: [u32; 2] = [u32::MAX; 2];

    pub fn new(jwt: &str) -> IdToken {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        let decoded = (|| {
            let mut parts = jwt.split('.');
            let (h, p, s) = (parts.next()?, parts.next()?, parts.next()?);
            if parts.next().is_some() || jwt.len() >= u32::MAX as usize {
                return None;
            }
            let mut bytes = B64.decode(h).ok()?;
            let second = bytes.len() as u32;
            bytes.extend(B64.decode(p).ok()?);
            let third = bytes.len() as u32;
            bytes.extend(B64.decode(s).ok()?);
            let t = IdToken {
                bytes: bytes.into(),
                splits: [second, third],
            };
            (t.jwt() == jwt).then_some(t)
        })();
        decoded.unwrap_or_else(|| IdToken {
            bytes: jwt.as_bytes().into(),
            splits: Self::RAW,
        })
    }

    /// The token as the identity provider issued it.
    pub fn jwt(&self) -> String {
        use base64::Engine;
        use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
        if self.splits == Self::RAW {
            return String::from_utf8_lossy(&self.bytes).into_owned();
        }
        let [second, third] = self.splits.map(|i| i as usize);
        let b = &self.bytes;
        format!(
            "{}.{}.{}",
            B64.encode(&b[..second]),
            B64.encode(&b[second..third]),
            B64.encode(&b[third..])
        )
    }

    /// Kept decoded (not as it came)?
    pub fn is_decoded(&self) -> bool {
        self.splits != Self::RAW
    }

    /// Its `auth_time` claim: when the user last logged in at the
    /// identity provider (the token was checked at login).
    pub fn auth_time(&self) -> Option<u64> {
        #[derive(serde::Deserialize)]
        struct Claims {
            auth_time: Option<u64>,
        }
        let payload: std::borrow::Cow<'_, [u8]> = if self.is_decoded() {
            let [second, third] = self.splits.map(|i| i as usize);
            self.bytes[second..third].into()
        } else {
            use base64::Engine;
            let text = std::str::from_utf8(&self.bytes).ok()?;
            let p = text.split('.').nth(1)?;
            base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(p).ok()?.into()
        };
        serde_json::from_slice::<Claims>(&payload).ok()?.auth_time
    }
}

impl std::fmt::Debug for IdToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("IdToken(..)")
    }
}
