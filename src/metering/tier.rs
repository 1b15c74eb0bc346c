//! The service tier value as metered: the raw string a request or answer carried, cut
//! to a bounded size before it reaches a row or a label.

/// The longest tier value kept on a row. Real values are a few bytes; a client or an
/// upstream sending a long one gets it cut here rather than stored whole.
pub const MAX_RECORDED_BYTES: usize = 64;

/// `value` cut to at most [`MAX_RECORDED_BYTES`] on a character boundary.
pub fn recorded(value: &str) -> &str {
    if value.len() <= MAX_RECORDED_BYTES {
        return value;
    }
    let mut end = MAX_RECORDED_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    &value[..end]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recorded_values_are_cut_on_a_character_boundary() {
        assert_eq!(recorded("flex"), "flex");
        let long = "é".repeat(40);
        let cut = recorded(&long);
        assert!(cut.len() <= MAX_RECORDED_BYTES && long.starts_with(cut));
        assert_eq!(cut.chars().count(), 32);
    }
}
