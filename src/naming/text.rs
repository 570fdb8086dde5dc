//! Text normalisation and similarity for names: what "equal after normalisation" and
//! "nearest standard name" mean.

use std::collections::BTreeSet;

/// Case-insensitive, trimmed, inner whitespace runs collapsed, nothing more (the study rule's
/// definition of equal names). DICOM's `^` component separator counts as a space.
pub fn normalize(text: &str) -> String {
    text.split(|c: char| c.is_whitespace() || c == '^')
        .filter(|word| !word.is_empty())
        .collect::<Vec<_>>()
        .join(" ")
        .to_lowercase()
}

/// Words for similarity: lower case, split on anything that is not a letter, digit or `%`,
/// with the playbooks' usual abbreviations expanded so that "Abd" meets "Abdomen".
pub fn tokens(text: &str) -> BTreeSet<String> {
    text.to_lowercase()
        .split(|c: char| !(c.is_alphanumeric() || c == '%'))
        .filter(|word| !word.is_empty())
        .map(|word| expand(word).to_string())
        .collect()
}

fn expand(word: &str) -> &str {
    match word {
        "abd" => "abdomen",
        "pelv" | "pel" => "pelvis",
        "wo" | "w/o" => "without",
        "w" => "with",
        "angio" => "angiography",
        "bilat" => "bilateral",
        "tx" => "treatment",
        "plan" | "planning" => "planning",
        "sim" | "simulation" => "simulation",
        "ctsim" => "simulation",
        "thorax" | "lung" | "lungs" => "chest",
        "brain" => "head",
        other => other,
    }
}

/// Similarity of two names in 0.0 ..= 1.0: the Dice coefficient of their token sets, with a
/// little weight on character trigrams so that near-spellings still rank.
pub fn similarity(a: &str, b: &str) -> f64 {
    if normalize(a).is_empty() || normalize(b).is_empty() {
        return 0.0;
    }
    let (ta, tb) = (tokens(a), tokens(b));
    let token_score = dice(&ta, &tb);
    let (ga, gb) = (trigrams(a), trigrams(b));
    let trigram_score = dice(&ga, &gb);
    0.8 * token_score + 0.2 * trigram_score
}

fn dice<T: Ord>(a: &BTreeSet<T>, b: &BTreeSet<T>) -> f64 {
    if a.is_empty() && b.is_empty() {
        return 0.0;
    }
    let common = a.intersection(b).count();
    2.0 * common as f64 / (a.len() + b.len()) as f64
}

fn trigrams(text: &str) -> BTreeSet<[char; 3]> {
    let chars: Vec<char> = format!("  {}  ", normalize(text)).chars().collect();
    chars.windows(3).map(|w| [w[0], w[1], w[2]]).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalisation_is_case_trim_and_whitespace_only() {
        assert_eq!(
            normalize("  CT Abdomen wo  IV Contrast "),
            "ct abdomen wo iv contrast"
        );
        assert_eq!(normalize("CHEST^RT PLANNING"), "chest rt planning");
        assert_eq!(normalize("CT\tChest"), "ct chest");
        assert_ne!(normalize("CT Chest w/o"), normalize("CT Chest wo"));
        assert_eq!(normalize(""), "");
    }

    #[test]
    fn similarity_prefers_the_same_body_part() {
        let chest = similarity("CHEST CT PLAIN", "CT Chest wo IV Contrast");
        let head = similarity("CHEST CT PLAIN", "CT Head wo IV Contrast");
        assert!(chest > head, "{chest} <= {head}");
        assert!(similarity("CT Abd wo", "CT Abdomen wo IV Contrast") > 0.5);
        assert_eq!(similarity("", ""), 0.0);
    }
}
