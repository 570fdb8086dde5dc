//! Hostile and broken input on raw sockets: simgate refuses it, keeps its memory bounded, and
//! keeps serving everyone else.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use dicom_ul::association::client::ClientAssociationOptions;
use dicom_ul::pdu::{PDataValue, PDataValueType};
use dicom_ul::{ClientAssociation, Pdu};

use crate::support::{App, assert_success, files_below};

const CT_IMAGE_STORAGE: &str = "1.2.840.10008.5.1.4.1.1.2";
const EXPLICIT_VR_LE: &str = "1.2.840.10008.1.2.1";
const PEAK_MEMORY_LIMIT: u64 = 200 * 1024 * 1024;

/// Reads until the server closes the connection (or sends an A-ABORT and closes); panics if it
/// keeps the connection open.
fn expect_closed(mut stream: TcpStream) {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut sink = [0u8; 4096];
    loop {
        match stream.read(&mut sink) {
            Ok(0) => return,
            Ok(_) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return,
            Err(e) => panic!("the server kept the connection open: {e}"),
        }
    }
}

fn connect(app: &App) -> TcpStream {
    TcpStream::connect(("127.0.0.1", app.port)).expect("connect")
}

fn associate(app: &App) -> ClientAssociation<TcpStream> {
    ClientAssociationOptions::new()
        .calling_ae_title("CTSIM")
        .called_ae_title("SIMGATE")
        .with_presentation_context(CT_IMAGE_STORAGE, vec![EXPLICIT_VR_LE])
        .read_timeout(Duration::from_secs(30))
        .establish_with(&format!("SIMGATE@127.0.0.1:{}", app.port))
        .expect("associate")
}

fn element(out: &mut Vec<u8>, element: u16, value: &[u8]) {
    out.extend_from_slice(&0u16.to_le_bytes());
    out.extend_from_slice(&element.to_le_bytes());
    out.extend_from_slice(&(value.len() as u32).to_le_bytes());
    out.extend_from_slice(value);
}

fn uid(value: &str) -> Vec<u8> {
    let mut bytes = value.as_bytes().to_vec();
    if bytes.len() % 2 == 1 {
        bytes.push(0);
    }
    bytes
}

/// A C-STORE-RQ command set in Implicit VR Little Endian.
fn store_rq(message_id: u16, sop_instance_uid: &str) -> Vec<u8> {
    let mut body = Vec::new();
    element(&mut body, 0x0002, &uid(CT_IMAGE_STORAGE));
    element(&mut body, 0x0100, &0x0001u16.to_le_bytes());
    element(&mut body, 0x0110, &message_id.to_le_bytes());
    element(&mut body, 0x0700, &0u16.to_le_bytes());
    element(&mut body, 0x0800, &0u16.to_le_bytes());
    element(&mut body, 0x1000, &uid(sop_instance_uid));
    let mut out = Vec::new();
    element(&mut out, 0x0000, &(body.len() as u32).to_le_bytes());
    out.extend(body);
    out
}

fn pdv(pc: u8, value_type: PDataValueType, data: Vec<u8>) -> Pdu {
    Pdu::PData {
        data: vec![PDataValue {
            presentation_context_id: pc,
            value_type,
            is_last: true,
            data,
        }],
    }
}

/// Sends one C-STORE with `dataset` and returns the response status.
fn store(
    association: &mut ClientAssociation<TcpStream>,
    sop_instance_uid: &str,
    dataset: Vec<u8>,
) -> u16 {
    let pc = association.presentation_contexts()[0].id;
    association
        .send(&pdv(
            pc,
            PDataValueType::Command,
            store_rq(1, sop_instance_uid),
        ))
        .expect("send command");
    association
        .send(&pdv(pc, PDataValueType::Data, dataset))
        .expect("send data");
    match association.receive().expect("response") {
        Pdu::PData { data } => {
            let command = &data[0].data;
            // Find (0000,0900) Status in the implicit VR LE response.
            let mut at = 0;
            while at + 8 <= command.len() {
                let el = u16::from_le_bytes([command[at + 2], command[at + 3]]);
                let len = u32::from_le_bytes([
                    command[at + 4],
                    command[at + 5],
                    command[at + 6],
                    command[at + 7],
                ]) as usize;
                if el == 0x0900 {
                    return u16::from_le_bytes([command[at + 8], command[at + 9]]);
                }
                at += 8 + len;
            }
            panic!("no status in response");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn garbage_bytes_are_refused_and_the_server_keeps_serving() {
    let app = App::spawn();
    let mut stream = connect(&app);
    let garbage: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    stream
        .write_all(b"GET / HTTP/1.1\r\nHost: simgate\r\n\r\n")
        .expect("write");
    let _ = stream.write_all(&garbage);
    expect_closed(stream);
    assert_success(&app.echoscu(), "echoscu after garbage");
}

#[test]
fn a_pdu_longer_than_max_pdu_length_is_refused_without_allocating_it() {
    let app = App::spawn();
    // An A-ASSOCIATE-RQ claiming 4 GiB.
    let mut stream = connect(&app);
    stream
        .write_all(&[0x01, 0x00, 0xFF, 0xFF, 0xFF, 0xF0])
        .expect("write");
    let _ = stream.write_all(&[0u8; 1024]);
    expect_closed(stream);

    // A P-DATA-TF claiming 1 GiB inside an established association.
    let mut association = associate(&app);
    let raw = association.inner_stream();
    raw.write_all(&[0x04, 0x00, 0x40, 0x00, 0x00, 0x00])
        .expect("write");
    let _ = raw.write_all(&[0u8; 64 * 1024]);
    let closed = raw.try_clone().expect("clone");
    expect_closed(closed);
    app.wait_for_log("aborted");

    assert_success(&app.echoscu(), "echoscu after oversized PDUs");
    let peak = app.peak_rss_bytes();
    assert!(peak < PEAK_MEMORY_LIMIT, "peak memory {peak} bytes");
}

#[test]
fn a_data_set_declaring_a_4_gib_element_is_refused_with_bounded_memory() {
    let app = App::spawn();
    let mut association = associate(&app);
    // 16 bytes: (7FE0,0010) OW with a declared length of 4 GiB - 2, then 4 bytes of value.
    let mut dataset = vec![0xE0, 0x7F, 0x10, 0x00, b'O', b'W', 0, 0];
    dataset.extend_from_slice(&0xFFFF_FFFEu32.to_le_bytes());
    dataset.extend_from_slice(&[1, 2, 3, 4]);
    assert_eq!(dataset.len(), 16);
    let status = store(&mut association, "1.2.3.4.5.6", dataset);
    assert_eq!(status & 0xF000, 0xC000, "status 0x{status:04X}");
    association.release().expect("release");
    assert!(
        app.log().contains("declares 4294967294 bytes"),
        "the log says why:\n{}",
        app.log()
    );

    assert_success(&app.echoscu(), "echoscu after the lying data set");
    let peak = app.peak_rss_bytes();
    assert!(peak < PEAK_MEMORY_LIMIT, "peak memory {peak} bytes");
    assert_eq!(app.count("SELECT count(*) FROM instances"), 0);
    assert!(files_below(&app.data_dir().join("spool")).is_empty());
}

#[test]
fn a_path_like_sop_instance_uid_is_refused_and_writes_nothing() {
    let app = App::spawn();
    let mut association = associate(&app);
    let mut dataset = Vec::new();
    for (group, elem, vr, value) in [
        (0x0008u16, 0x0016u16, b"UI", uid(CT_IMAGE_STORAGE)),
        (0x0008, 0x0018, b"UI", uid("../../../../tmp/simgate-escape")),
        (0x0020, 0x000D, b"UI", uid("1.2.3")),
        (0x0020, 0x000E, b"UI", uid("1.2.3.4")),
    ] {
        dataset.extend_from_slice(&group.to_le_bytes());
        dataset.extend_from_slice(&elem.to_le_bytes());
        dataset.extend_from_slice(vr);
        dataset.extend_from_slice(&(value.len() as u16).to_le_bytes());
        dataset.extend_from_slice(&value);
    }
    // In the command: refused before any byte is stored.
    let status = store(
        &mut association,
        "../../../../tmp/simgate-escape",
        dataset.clone(),
    );
    assert_eq!(status & 0xF000, 0xC000, "status 0x{status:04X}");
    // In the data set only (the command's UID is valid): refused as well.
    let status = store(&mut association, "1.2.3.4.5", dataset);
    assert_eq!(status & 0xF000, 0xC000, "status 0x{status:04X}");
    association.release().expect("release");
    assert!(!std::path::Path::new("/tmp/simgate-escape").exists());
    assert_eq!(app.count("SELECT count(*) FROM instances"), 0);
    assert!(files_below(&app.data_dir().join("spool")).is_empty());
    assert!(files_below(&app.data_dir().join("tmp")).is_empty());
    assert_success(&app.echoscu(), "echoscu afterwards");
}

#[test]
fn a_command_split_over_several_pdvs_and_several_pdvs_per_pdu_are_handled() {
    let app = App::spawn();
    let mut association = associate(&app);
    let pc = association.presentation_contexts()[0].id;
    // C-ECHO is not negotiated here; use C-STORE with a minimal valid data set instead.
    let sop = "1.2.826.0.1.3680043.10.1";
    let mut dataset = Vec::new();
    for (group, elem, vr, value) in [
        (0x0008u16, 0x0016u16, b"UI", uid(CT_IMAGE_STORAGE)),
        (0x0008, 0x0018, b"UI", uid(sop)),
        (0x0008, 0x0060, b"CS", b"CT".to_vec()),
        (0x0020, 0x000D, b"UI", uid("1.2.826.0.1.3680043.10.2")),
        (0x0020, 0x000E, b"UI", uid("1.2.826.0.1.3680043.10.3")),
    ] {
        dataset.extend_from_slice(&group.to_le_bytes());
        dataset.extend_from_slice(&elem.to_le_bytes());
        dataset.extend_from_slice(vr);
        dataset.extend_from_slice(&(value.len() as u16).to_le_bytes());
        dataset.extend_from_slice(&value);
    }
    let command = store_rq(9, sop);
    let (a, b) = command.split_at(10);
    let (c, d) = dataset.split_at(7);
    // One PDU: the command in two PDVs; a second PDU: the data set in two PDVs.
    let value = |value_type: PDataValueType, is_last: bool, data: &[u8]| PDataValue {
        presentation_context_id: pc,
        value_type,
        is_last,
        data: data.to_vec(),
    };
    association
        .send(&Pdu::PData {
            data: vec![
                value(PDataValueType::Command, false, a),
                value(PDataValueType::Command, true, b),
            ],
        })
        .expect("send command");
    association
        .send(&Pdu::PData {
            data: vec![
                value(PDataValueType::Data, false, c),
                value(PDataValueType::Data, true, d),
            ],
        })
        .expect("send data");
    let Pdu::PData { data } = association.receive().expect("response") else {
        panic!("no P-DATA");
    };
    let response = &data[0].data;
    // Message ID Being Responded To (0000,0120) must be 9, status success.
    let find = |wanted: u16| {
        let mut at = 0;
        while at + 8 <= response.len() {
            let el = u16::from_le_bytes([response[at + 2], response[at + 3]]);
            let len = u32::from_le_bytes([
                response[at + 4],
                response[at + 5],
                response[at + 6],
                response[at + 7],
            ]) as usize;
            if el == wanted {
                return u16::from_le_bytes([response[at + 8], response[at + 9]]);
            }
            at += 8 + len;
        }
        panic!("(0000,{wanted:04X}) missing");
    };
    assert_eq!(find(0x0120), 9);
    assert_eq!(find(0x0900), 0x0000);
    association.release().expect("release");
    assert_eq!(app.count("SELECT count(*) FROM instances"), 1);
}

#[test]
fn an_association_over_the_limit_is_rejected_as_transient_and_others_carry_on() {
    let app = App::spawn_with("max_associations = 1", "");
    let association = associate(&app);
    let refused = app.echoscu();
    assert!(!refused.status.success());
    let output = crate::support::text(&refused);
    assert!(output.contains("Local Limit Exceeded"), "{output}");
    association.release().expect("release");
    // The slot frees up once the first association has ended.
    app.wait_for_log("outcome=released");
    assert_success(&app.echoscu(), "echoscu once the slot is free");
}

#[test]
fn a_peer_address_outside_the_allow_list_is_disconnected() {
    let app = App::spawn_with("allowed_peer_addresses = [\"192.0.2.1\"]", "");
    let refused = app.echoscu();
    assert!(
        !refused.status.success(),
        "{}",
        crate::support::text(&refused)
    );
    app.wait_for_log("outside listener.allowed_peer_addresses");
}

#[test]
fn a_silent_association_is_aborted_after_the_idle_timeout() {
    let app = App::spawn_with("", "");
    app.edit_config(|c| c.replace("idle_timeout = \"20s\"", "idle_timeout = \"1s\""));
    let mut app = app;
    app.kill9();
    app.start();
    let mut association = associate(&app);
    // Say nothing: simgate aborts (A-ABORT, then closes) once the idle timeout passes.
    let stream = association.inner_stream().try_clone().expect("clone");
    expect_closed(stream);
    app.wait_for_log("aborted");
    assert_success(&app.echoscu(), "echoscu afterwards");
}

/// Proposes contexts with these IDs on a raw socket; returns what came back until the close.
fn associate_with_context_ids(app: &App, ids: &[u8]) -> Vec<u8> {
    use dicom_ul::pdu::{AssociationRQ, PresentationContextProposed, UserVariableItem};
    let request = Pdu::AssociationRQ(AssociationRQ {
        protocol_version: 1,
        calling_ae_title: "CTSIM".into(),
        called_ae_title: "SIMGATE".into(),
        application_context_name: "1.2.840.10008.3.1.1.1".into(),
        presentation_contexts: ids
            .iter()
            .map(|&id| PresentationContextProposed {
                id,
                abstract_syntax: CT_IMAGE_STORAGE.into(),
                transfer_syntaxes: vec![EXPLICIT_VR_LE.into()],
            })
            .collect(),
        user_variables: vec![UserVariableItem::MaxLength(16384)],
    });
    let mut bytes = Vec::new();
    dicom_ul::write_pdu(&mut bytes, &request).expect("encode");
    let mut stream = connect(app);
    stream.write_all(&bytes).expect("send");
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .expect("timeout");
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    received
}

#[test]
fn even_or_repeated_presentation_context_ids_abort_with_a_reason() {
    let app = App::spawn();
    for (ids, problem) in [
        (&[1u8, 2][..], "presentation context ID 2 is even"),
        (&[3, 3][..], "presentation context ID 3 is used twice"),
    ] {
        let received = associate_with_context_ids(&app, ids);
        // An A-ABORT (type 0x07) follows the A-ASSOCIATE-AC.
        assert!(
            received.contains(&0x07),
            "no A-ABORT for {ids:?}: {received:02x?}"
        );
        app.wait_for_log(problem);
    }
    assert_success(&app.echoscu(), "echoscu after the aborted associations");
}

#[test]
fn a_request_with_no_acceptable_context_is_logged_with_what_it_asked_for() {
    let app = App::spawn();
    // Modality Worklist FIND is nothing simgate serves.
    let output = crate::support::dcmtk("findscu")
        .args([
            "-W",
            "-k",
            "PatientName=",
            "-aet",
            "RIS",
            "-aec",
            "SIMGATE",
            "127.0.0.1",
        ])
        .arg(app.port.to_string())
        .output()
        .expect("findscu");
    assert!(!output.status.success());
    let line = app.wait_for_log("no proposed presentation context is accepted");
    assert!(line.contains("1.2.840.10008.5.1.4.31"), "{line}");
    assert!(line.contains("Worklist"), "{line}");
}

#[test]
fn silent_connections_neither_take_association_slots_nor_stay_open() {
    // Twice as many silent sockets as association slots: simulators still get in at once,
    // and the silent ones are closed once the association request timeout passes.
    let app = App::spawn_with(
        "max_associations = 4\nassociation_request_timeout = \"2s\"",
        "",
    );
    let silent: Vec<std::net::TcpStream> = (0..8).map(|_| connect(&app)).collect();
    std::thread::sleep(std::time::Duration::from_millis(200));
    let started = std::time::Instant::now();
    assert_success(&app.echoscu(), "echoscu beside 8 silent connections");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "C-ECHO waited {:?} behind silent connections",
        started.elapsed()
    );
    for stream in silent {
        expect_closed(stream);
    }
    let log = app.wait_for_log("sent no association request in time");
    assert!(log.contains("suppressed=0"), "{log}");
    assert_eq!(
        app.log()
            .matches("sent no association request in time")
            .count(),
        1,
        "one warning for the burst, not one per connection"
    );
}

#[test]
fn one_address_cannot_take_every_association_slot() {
    let app = App::spawn_with("max_associations = 8\nmax_associations_per_address = 2", "");
    let first = associate(&app);
    let second = associate(&app);
    let refused = app.echoscu();
    let output = crate::support::text(&refused);
    assert!(output.contains("Local Limit Exceeded"), "{output}");
    app.wait_for_log("per address");
    first.release().expect("release");
    app.wait_for_log("outcome=released");
    assert_success(&app.echoscu(), "echoscu once the address has a slot again");
    second.release().expect("release");
}

#[test]
fn control_characters_from_the_network_cannot_forge_log_lines() {
    let app = App::spawn();
    // A calling AE title with a newline and an escape sequence: refused or not, the log shows
    // it escaped, on one line.
    let _ = ClientAssociationOptions::new()
        .calling_ae_title("EV\nFAKE\u{1b}[2J")
        .called_ae_title("SIMGATE")
        .with_presentation_context(CT_IMAGE_STORAGE, vec![EXPLICIT_VR_LE])
        .read_timeout(Duration::from_secs(10))
        .establish_with(&format!("SIMGATE@127.0.0.1:{}", app.port))
        .map(|a| a.release());
    let line = app.wait_for_log("FAKE");
    assert!(!app.log().contains('\u{1b}'), "no raw escape in the log");
    assert!(
        !app.log().lines().any(|l| l.starts_with("FAKE")),
        "no forged line: {line}"
    );
}
