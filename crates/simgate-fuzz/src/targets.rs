//! The fuzz targets: each takes arbitrary bytes and runs one parser of simgate on them, the way
//! the gateway runs it on network or file input. A target may reject its input; it may not
//! panic, hang or allocate by a declared length.

use std::path::Path;

use dicom_core::VR;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::InMemDicomObject;
use simgate::dicom::{dataset, dimse, transfer_syntax};

pub struct Target {
    pub name: &'static str,
    pub run: fn(&[u8]),
}

pub const TARGETS: &[Target] = &[
    Target {
        name: "dimse",
        run: dimse_commands,
    },
    Target {
        name: "pdu",
        run: pdus,
    },
    Target {
        name: "scan",
        run: data_set_walk,
    },
    Target {
        name: "playbook",
        run: playbook_import,
    },
    Target {
        name: "series-rules",
        run: series_rules,
    },
    Target {
        name: "query",
        run: query_identifier,
    },
    Target {
        name: "commitment",
        run: commitment_request,
    },
];

/// Transfer syntaxes a `scan` input names by its first byte.
const SYNTAXES: [&str; 4] = [
    transfer_syntax::EXPLICIT_VR_LITTLE_ENDIAN,
    transfer_syntax::IMPLICIT_VR_LITTLE_ENDIAN,
    transfer_syntax::EXPLICIT_VR_BIG_ENDIAN,
    "1.2.840.10008.1.2.1.99",
];

/// DIMSE command sets, as requests and as responses.
fn dimse_commands(input: &[u8]) {
    let _ = dimse::Command::decode(input);
    let _ = dimse::ResponseFields::decode(input);
}

/// PDUs as the upper layer reads them off the wire, one after another.
fn pdus(input: &[u8]) {
    let mut cursor = std::io::Cursor::new(input);
    for _ in 0..64 {
        match dicom_ul::pdu::read_pdu(&mut cursor, 16_384, true) {
            Ok(Some(pdu)) => {
                // What the association does with a P-DATA-TF: its PDVs' commands decoded.
                if let dicom_ul::Pdu::PData { data } = pdu {
                    for value in data {
                        if value.value_type == dicom_ul::pdu::PDataValueType::Command {
                            let _ = dimse::Command::decode(&value.data);
                        }
                    }
                }
            }
            _ => return,
        }
    }
}

/// The streaming walk over a received data set, fed in pieces as PDVs arrive, then the header
/// read from what it copied. The first byte picks the transfer syntax, the second where the
/// data is split.
fn data_set_walk(input: &[u8]) {
    let Some((&syntax, rest)) = input.split_first() else {
        return;
    };
    let Some((&split, data)) = rest.split_first() else {
        return;
    };
    let uid = SYNTAXES[usize::from(syntax) % SYNTAXES.len()];
    let Some(mut scanner) = simgate::scp::scan::DatasetScanner::for_transfer_syntax(uid) else {
        return;
    };
    let at = if data.is_empty() {
        0
    } else {
        usize::from(split) * data.len() / 256
    };
    for piece in [&data[..at], &data[at..]] {
        if scanner.feed(piece).is_err() {
            return;
        }
    }
    if let Ok(header) = scanner.finish() {
        let _ = simgate::scp::header::InstanceHeader::parse(&header, uid);
    }
}

fn playbook_import(input: &[u8]) {
    let _ = simgate::naming::playbook::parse("fuzz.csv", input);
}

fn series_rules(input: &[u8]) {
    let _ = simgate::naming::SeriesRules::parse(&String::from_utf8_lossy(input));
}

/// A C-FIND/C-MOVE identifier (first byte: model and whether it is a retrieve), matched
/// against a row made of its own values; the rest of the bytes also as a wildcard pattern
/// and value.
fn query_identifier(input: &[u8]) {
    use simgate::query::{Model, Query, matches_value};
    let Some((&flags, rest)) = input.split_first() else {
        return;
    };
    let model = if flags & 1 == 0 {
        Model::StudyRoot
    } else {
        Model::PatientRoot
    };
    if let Ok(object) = dataset::parse(rest, transfer_syntax::EXPLICIT_VR_LITTLE_ENDIAN)
        && let Ok(query) = Query::parse(&object, model, flags & 2 != 0)
    {
        let row: Vec<(u32, String)> = query
            .keys
            .iter()
            .map(|k| {
                (
                    (u32::from(k.tag.group()) << 16) | u32::from(k.tag.element()),
                    k.value.chars().rev().collect(),
                )
            })
            .collect();
        let _ = query.matches(&row);
        let _ = dataset::encode(
            &query.answer(&row, "SIMGATE"),
            transfer_syntax::EXPLICIT_VR_LITTLE_ENDIAN,
        );
    }
    // Wildcard matching must stay fast whatever the pattern (no exponential backtracking).
    let text = String::from_utf8_lossy(rest);
    let middle = text
        .char_indices()
        .map(|(at, _)| at)
        .find(|at| *at >= text.len() / 2)
        .unwrap_or(text.len());
    let (pattern, value) = text.split_at(middle);
    for vr in [VR::LO, VR::PN, VR::UI, VR::DA, VR::TM, VR::DT] {
        let _ = matches_value(vr, pattern, value);
    }
}

/// An N-ACTION (Storage Commitment) data set.
fn commitment_request(input: &[u8]) {
    if let Ok(object) = dataset::parse(input, transfer_syntax::EXPLICIT_VR_LITTLE_ENDIAN) {
        let _ = simgate::commitment::Request::from_object(&object);
    }
}

/// Writes the seed corpora: real inputs of each kind, made by simgate's own encoders and
/// the synthetic-data generator.
pub fn write_seeds(corpus: &Path) -> anyhow::Result<()> {
    let write = |target: &str, name: &str, bytes: &[u8]| -> anyhow::Result<()> {
        let dir = corpus.join(target);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(name), bytes)?;
        Ok(())
    };
    // DIMSE.
    write(
        "dimse",
        "c-store-rq",
        &dimse::encode_store_request(7, "1.2.840.10008.5.1.4.1.1.2", "1.2.3.4", None),
    )?;
    write("dimse", "c-echo-rq", &dimse::encode_echo_request(1))?;
    write(
        "dimse",
        "n-event-report-rq",
        &dimse::encode_event_report_request(3, "1.2.840.10008.1.20.1", "1.2.840.10008.1.20.1.1", 2),
    )?;
    let response = dimse::Response {
        command_field: dimse::command_field::C_MOVE_RSP,
        message_id_being_responded_to: 9,
        affected_sop_class_uid: "1.2.840.10008.5.1.4.1.2.2.2",
        status: dimse::Status::PENDING,
        sub_operations: Some(dimse::SubOperations {
            remaining: 3,
            completed: 1,
            failed: 0,
            warning: 0,
        }),
        ..Default::default()
    };
    write("dimse", "c-move-rsp", &response.encode())?;

    // PDUs: an association request and a P-DATA-TF with a command.
    use dicom_ul::pdu::{
        AssociationRQ, PDataValue, PDataValueType, PresentationContextProposed, UserVariableItem,
    };
    let request = dicom_ul::Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "CTSIM".into(),
        called_ae_title: "SIMGATE".into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: vec![PresentationContextProposed {
            id: 1,
            abstract_syntax: "1.2.840.10008.5.1.4.1.1.2".into(),
            transfer_syntaxes: vec!["1.2.840.10008.1.2.1".into(), "1.2.840.10008.1.2".into()],
        }],
        user_variables: vec![
            UserVariableItem::MaxLength(16384),
            UserVariableItem::ImplementationClassUID("1.2.3.4".into()),
            UserVariableItem::ScuScpRoleSelectionSubItem(
                "1.2.840.10008.5.1.4.1.1.2".into(),
                dicom_ul::pdu::RequestorRoles {
                    scu: false,
                    scp: true,
                },
            ),
        ],
    });
    let mut bytes = Vec::new();
    dicom_ul::write_pdu(&mut bytes, &request)?;
    write("pdu", "a-associate-rq", &bytes)?;
    let data = dicom_ul::Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: 1,
            value_type: PDataValueType::Command,
            is_last: true,
            data: dimse::encode_echo_request(1),
        }],
    };
    let mut bytes = Vec::new();
    dicom_ul::write_pdu(&mut bytes, &data)?;
    dicom_ul::write_pdu(&mut bytes, &dicom_ul::Pdu::ReleaseRQ)?;
    write("pdu", "p-data-and-release", &bytes)?;

    // Data sets: a CT slice and an RT Structure Set (sequences), in each syntax.
    let mut spec = simgate_synth::StudySpec::planning_ct(1, 5);
    spec.rows = 8;
    spec.columns = 8;
    let dir = std::env::temp_dir().join(format!("simgate-fuzz-seeds-{}", std::process::id()));
    let study = simgate_synth::write_study(&spec, &dir)?;
    for (index, file) in study.files.iter().enumerate().take(2) {
        let object = dicom_object::open_file(&file.path)?;
        for (number, uid) in SYNTAXES.iter().enumerate().take(3) {
            let ts = dicom_transfer_syntax_registry::TransferSyntaxRegistry
                .get(uid)
                .ok_or_else(|| anyhow::anyhow!("{uid} unknown"))?;
            let mut bytes = vec![number as u8, 128];
            object.write_dataset_with_ts(&mut bytes, ts)?;
            write("scan", &format!("instance{index}-ts{number}"), &bytes)?;
        }
        // Deflated: the Explicit VR Little Endian bytes, raw deflate.
        let mut plain = Vec::new();
        object.write_dataset_with_ts(
            &mut plain,
            dicom_transfer_syntax_registry::TransferSyntaxRegistry
                .get(transfer_syntax::EXPLICIT_VR_LITTLE_ENDIAN)
                .ok_or_else(|| anyhow::anyhow!("ELE unknown"))?,
        )?;
        use std::io::Write;
        let mut encoder =
            flate2::write::DeflateEncoder::new(vec![3u8, 64], flate2::Compression::default());
        encoder.write_all(&plain)?;
        write(
            "scan",
            &format!("instance{index}-deflated"),
            &encoder.finish()?,
        )?;
    }
    let _ = std::fs::remove_dir_all(&dir);

    // Playbooks and series rules.
    write(
        "playbook",
        "radlex.csv",
        b"RPID,LETTER_CODE,\"SHORT_NAME\",\"LONG_NAME\",MODALITY,PLAYBOOK_TYPE\n\
          RPID16,CTCH,\"CT CHEST WO\",\"CT Chest wo IV Contrast\",CT,RADIOLOGY ORDERABLE\n",
    )?;
    write(
        "playbook",
        "loinc.csv",
        b"\"LoincNumber\",\"LongCommonName\",\"PartNumber\",\"PartTypeName\",\"PartName\",\"PartSequenceOrder\",\"RID\",\"PreferredName\",\"RPID\",\"LongName\"\n\
          \"29252-4\",\"CT Chest WO contrast\",\"LP1\",\"Rad.Modality.Modality Type\",\"CT\",\"A\",\"RID10321\",\"CT\",\"RPID16\",\"CT Chest without IV Contrast\"\n",
    )?;
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/nomenclature");
    let names = std::fs::read(shipped.join("standard-names.csv"))?;
    write(
        "playbook",
        "standard-names.csv",
        &names[..names.len().min(4096)],
    )?;
    write(
        "series-rules",
        "series-rules.toml",
        &std::fs::read(shipped.join("series-rules.toml"))?,
    )?;

    // Identifiers and an N-ACTION data set.
    let ele = transfer_syntax::EXPLICIT_VR_LITTLE_ENDIAN;
    let identifier =
        |level: &str, keys: &[(dicom_core::Tag, VR, &str)]| -> anyhow::Result<Vec<u8>> {
            let mut object = InMemDicomObject::new_empty();
            object.put(dataset::element(tags::QUERY_RETRIEVE_LEVEL, VR::CS, level));
            for (tag, vr, value) in keys {
                object.put(dataset::element(*tag, *vr, value));
            }
            Ok(dataset::encode(&object, ele)?)
        };
    let study = identifier(
        "STUDY",
        &[
            (tags::PATIENT_NAME, VR::PN, "DOE*"),
            (tags::STUDY_DATE, VR::DA, "20250101-20251231"),
            (tags::STUDY_INSTANCE_UID, VR::UI, ""),
            (tags::MODALITIES_IN_STUDY, VR::CS, "CT"),
        ],
    )?;
    write("query", "study-root-study", &[&[0u8][..], &study].concat())?;
    let image = identifier(
        "IMAGE",
        &[
            (tags::PATIENT_ID, VR::LO, "PAT?1"),
            (tags::STUDY_INSTANCE_UID, VR::UI, "1.2.3"),
            (tags::SERIES_INSTANCE_UID, VR::UI, "1.2.3.4\\1.2.3.5"),
            (tags::SOP_INSTANCE_UID, VR::UI, ""),
            (tags::STUDY_TIME, VR::TM, "0800-1015"),
        ],
    )?;
    write(
        "query",
        "patient-root-image-retrieve",
        &[&[3u8][..], &image].concat(),
    )?;
    let report = simgate::commitment::Report {
        request_id: 1,
        transaction_uid: "1.2.3.4.5".into(),
        committed: vec![("1.2.840.10008.5.1.4.1.1.2".into(), "1.2.3.4.6".into())],
        failed: vec![(
            "1.2.840.10008.5.1.4.1.1.2".into(),
            "1.2.3.4.7".into(),
            0x0112,
        )],
    };
    write(
        "commitment",
        "n-action",
        &dataset::encode(&report.to_object("SIMGATE"), ele)?,
    )?;
    println!("seed corpora written to {}", corpus.display());
    Ok(())
}
