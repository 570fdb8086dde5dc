//! Which destinations an instance goes to: each destination's filters on SOP class, modality
//! and calling AE title. Pure; the receive path asks it inside the indexing transaction.

use crate::config::DestinationConfig;
use crate::scp::header::InstanceHeader;

/// The destinations that take this instance, in configuration order.
pub fn destinations_for<'d>(
    destinations: &'d [DestinationConfig],
    header: &InstanceHeader,
    calling_ae_title: &str,
) -> Vec<&'d DestinationConfig> {
    destinations
        .iter()
        .filter(|d| accepts(d, header, calling_ae_title))
        .collect()
}

/// Whether an instance passes a destination's filters (an empty filter passes everything).
fn accepts(
    destination: &DestinationConfig,
    header: &InstanceHeader,
    calling_ae_title: &str,
) -> bool {
    let (sop_class_uid, modality) = (header.sop_class_uid.as_str(), header.modality.as_str());
    (destination.sop_classes.is_empty()
        || destination.sop_classes.iter().any(|c| c == sop_class_uid))
        && (destination.modalities.is_empty()
            || destination
                .modalities
                .iter()
                .any(|m| m.eq_ignore_ascii_case(modality)))
        && (destination.from_calling_ae_titles.is_empty()
            || destination
                .from_calling_ae_titles
                .iter()
                .any(|ae| ae.as_str() == calling_ae_title.trim()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AeTitle;

    fn destination(
        name: &str,
        sop_classes: &[&str],
        modalities: &[&str],
        from: &[&str],
    ) -> DestinationConfig {
        DestinationConfig {
            name: name.into(),
            ae_title: AeTitle::parse("TPS").expect("ae"),
            address: "127.0.0.1:104".into(),
            calling_ae_title: AeTitle::parse("SIMGATE").expect("ae"),
            sop_classes: sop_classes.iter().map(|s| s.to_string()).collect(),
            modalities: modalities.iter().map(|s| s.to_string()).collect(),
            from_calling_ae_titles: from
                .iter()
                .map(|a| AeTitle::parse(a).expect("ae"))
                .collect(),
            tls: None,
            hold_on: Vec::new(),
            forward_when: crate::config::ForwardWhen::Received,
        }
    }

    #[test]
    fn each_filter_narrows_and_an_empty_one_passes_everything() {
        let destinations = [
            destination("all", &[], &[], &[]),
            destination("ct-only", &["1.2.840.10008.5.1.4.1.1.2"], &[], &[]),
            destination("rt", &[], &["rtstruct", "RTPLAN"], &[]),
            destination("from-sim", &[], &[], &["CTSIM"]),
        ];
        let ct = InstanceHeader {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.2".into(),
            modality: "CT".into(),
            ..InstanceHeader::default()
        };
        let rtstruct = InstanceHeader {
            sop_class_uid: "1.2.840.10008.5.1.4.1.1.481.3".into(),
            modality: "RTSTRUCT".into(),
            ..InstanceHeader::default()
        };
        let names = |header, calling| {
            destinations_for(&destinations, header, calling)
                .into_iter()
                .map(|d| d.name.as_str())
                .collect::<Vec<_>>()
        };
        assert_eq!(names(&ct, "CTSIM "), ["all", "ct-only", "from-sim"]);
        assert_eq!(names(&rtstruct, "OTHER"), ["all", "rt"]);
    }
}
