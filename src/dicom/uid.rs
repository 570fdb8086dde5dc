//! UIDs (PS3.5 9.1): the syntax check applied wherever simgate accepts a UID, and the
//! trimming of the padding peers add.

/// UI values are padded with a NUL to even length; some peers also pad with spaces.
pub fn uid_text(value: &[u8]) -> String {
    String::from_utf8_lossy(value)
        .trim_end_matches(['\0', ' '])
        .to_string()
}

/// A UID as PS3.5 9.1 defines it: 1..=64 characters, numeric components separated by dots,
/// no empty component, no leading zero in a multi-digit component. Anything else (including
/// path-like values such as `../x`) is refused wherever simgate accepts a UID.
pub fn is_valid_uid(uid: &str) -> bool {
    !uid.is_empty()
        && uid.len() <= 64
        && uid.split('.').all(|component| {
            !component.is_empty()
                && component.bytes().all(|b| b.is_ascii_digit())
                && (component.len() == 1 || !component.starts_with('0'))
        })
}

/// A UID from an association request or a presentation context, without the NUL or space
/// padding some peers add.
pub fn trim_uid(uid: &str) -> &str {
    uid.trim_end_matches(['\0', ' '])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uid_validation_table() {
        let cases = [
            ("1.2.840.10008.5.1.4.1.1.2", true),
            ("2.25.329800735698586629295641978511506172918", true),
            ("0.1", true),
            ("", false),
            ("1..2", false),
            ("1.02", false),
            ("../../etc/passwd", false),
            ("1.2/3", false),
            ("1.2.3.", false),
            ("1.2 .3", false),
            (&"1.".repeat(32), false),
            (&format!("1{}", ".1".repeat(31)), true),
            (&format!("1{}", ".1".repeat(32)), false),
        ];
        for (uid, valid) in cases {
            assert_eq!(is_valid_uid(uid), valid, "{uid:?}");
        }
    }
}
