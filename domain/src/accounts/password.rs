//! Passwords: the policy new passwords meet. Hashing them is an adapter's work
//! (`kabinet_adapters::password_hash`).

use crate::user_error::UserError;

/// Fewest characters of a password.
pub const MIN_LEN: usize = 10;
/// Most characters of a password (hashing cost stays bounded).
pub const MAX_LEN: usize = 128;
/// Fewest different characters.
pub const MIN_DISTINCT: usize = 5;

/// Passwords and stems that guessing tries first (a data file of the repository).
const COMMON_LIST: &str = include_str!("../../data/common-passwords.txt");

fn common_passwords() -> &'static std::collections::HashSet<String> {
    static SET: std::sync::OnceLock<std::collections::HashSet<String>> = std::sync::OnceLock::new();
    SET.get_or_init(|| {
        COMMON_LIST
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty() && !line.starts_with('#'))
            .map(str::to_lowercase)
            .collect()
    })
}

/// Digits and signs people use in place of letters (`p@ssw0rd`).
fn unleet(text: &str) -> String {
    text.chars()
        .map(|c| match c {
            '0' => 'o',
            '1' | '!' => 'i',
            '3' => 'e',
            '4' | '@' => 'a',
            '5' | '$' => 's',
            '7' => 't',
            c => c,
        })
        .collect()
}

/// Whether `lower` (a password in lower case) is a common password or a common
/// stem with digits and signs around it (`password12`, `!qwerty2024`, `Pa55word1`).
pub fn is_common(lower: &str) -> bool {
    let list = common_passwords();
    let core = lower.trim_matches(|c: char| !c.is_alphabetic());
    [lower.to_string(), core.to_string(), unleet(core)]
        .iter()
        .any(|candidate| !candidate.is_empty() && list.contains(candidate))
}

/// A password that meets the policy.
pub struct NewPassword(String);

impl NewPassword {
    /// Checks `raw` against the policy; `login` is the account's normalised login.
    /// The error names `field`.
    pub fn parse(raw: &str, login: &str, field: &str) -> Result<NewPassword, UserError> {
        let chars = raw.chars().count();
        if chars < MIN_LEN {
            return Err(UserError::field(
                field,
                "PASSWORD_TOO_SHORT",
                format!("the password must have at least {MIN_LEN} characters, it has {chars}"),
            ));
        }
        if chars > MAX_LEN {
            return Err(UserError::field(
                field,
                "PASSWORD_TOO_LONG",
                format!("the password must have at most {MAX_LEN} characters, it has {chars}"),
            ));
        }
        if raw.chars().any(char::is_control) {
            return Err(UserError::field(
                field,
                "PASSWORD_INVALID_CHARACTER",
                "the password must not contain control characters",
            ));
        }
        let mut distinct: Vec<char> = raw.chars().collect();
        distinct.sort_unstable();
        distinct.dedup();
        if distinct.len() < MIN_DISTINCT {
            return Err(UserError::field(
                field,
                "PASSWORD_TOO_SIMPLE",
                format!(
                    "the password must use at least {MIN_DISTINCT} different characters, it uses {}",
                    distinct.len()
                ),
            ));
        }
        let lower = raw.to_lowercase();
        if is_common(&lower) {
            return Err(UserError::field(
                field,
                "PASSWORD_TOO_COMMON",
                "the password is a common one or a common word with digits around it \
                 (such as password12 or йцукен2024); choose another",
            ));
        }
        let login_core = login
            .split('@')
            .next()
            .unwrap_or(login)
            .trim_start_matches("+7")
            .to_lowercase();
        if login_core.chars().count() >= 4 && lower.contains(&login_core) {
            return Err(UserError::field(
                field,
                "PASSWORD_CONTAINS_LOGIN",
                "the password must not contain the login",
            ));
        }
        Ok(NewPassword(raw.to_string()))
    }

    /// The password text.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn code(raw: &str) -> &'static str {
        match NewPassword::parse(raw, "+79123456789", "password") {
            Ok(_) => "OK",
            Err(e) => e.code,
        }
    }

    #[test]
    fn the_policy_gives_precise_reasons() {
        assert_eq!(code("short1"), "PASSWORD_TOO_SHORT");
        assert_eq!(code(&"ab1".repeat(50)), "PASSWORD_TOO_LONG");
        assert_eq!(code("aaaaabbbbb"), "PASSWORD_TOO_SIMPLE");
        assert_eq!(code("Qwertyuiop"), "PASSWORD_TOO_COMMON");
        assert_eq!(code("my9123456789pw"), "PASSWORD_CONTAINS_LOGIN");
        assert_eq!(code("зимний-вечер-42"), "OK");
    }

    #[test]
    fn common_passwords_and_their_variants_are_refused_in_any_case() {
        for common in [
            "password12",
            "Password2024!",
            "P@ssw0rd123",
            "ЙЦУКЕН12345",
            "йцукенгшщз",
            "1q2w3e4r5t",
            "gfhjkm12345",
            "пароль-2024",
            "!!Qwerty2024",
            "iloveyou123",
            "Наташа19850",
        ] {
            assert_eq!(code(common), "PASSWORD_TOO_COMMON", "{common}");
        }
        for fine in [
            "Длинный-пароль-42",
            "летний-полдень-17",
            "correct-horse-battery",
        ] {
            assert_eq!(code(fine), "OK", "{fine}");
        }
    }
}
