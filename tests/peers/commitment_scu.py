"""A CT simulator's Storage Commitment Push Model SCU, on pynetdicom.

Sends one N-ACTION (Request Storage Commitment) for the instances given as CLASS:UID
arguments, then waits for the N-EVENT-REPORT: on the same association (--mode same, the
association is kept open), or on an association simgate opens to this script's own SCP
(--mode new, the association is released at once after the N-ACTION-RSP). Prints one JSON
line: how the report came, its event type, committed and failed instances.

With --mode new and --port 0, the script listens on a port of the OS's choosing, prints
"listening PORT", and reads simgate's port from its standard input: the test writes the port
into simgate's config before simgate starts.
"""

import argparse
import json
import queue
import threading
import sys

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt
from pynetdicom.sop_class import StorageCommitmentPushModel

INSTANCE = "1.2.840.10008.1.20.1.1"


def report_of(event, how):
    ds = event.event_information
    return {
        "association": how,
        "event_type": event.event_type,
        "transaction_uid": str(ds.TransactionUID),
        "committed": [str(i.ReferencedSOPInstanceUID) for i in ds.get("ReferencedSOPSequence", [])],
        "failed": [
            [str(i.ReferencedSOPInstanceUID), int(i.FailureReason)]
            for i in ds.get("FailedSOPSequence", [])
        ],
        "retrieve_ae_title": str(ds.get("RetrieveAETitle", "")),
    }


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", choices=["same", "new"], required=True)
    parser.add_argument("--listen-port", type=int, default=0)
    parser.add_argument("--ae", default="CTSIM")
    parser.add_argument("--wait", type=float, default=60)
    parser.add_argument("instances", nargs="+")
    args = parser.parse_args()

    reports = queue.Queue()

    def on_report(how):
        def handler(event):
            reports.put(report_of(event, how))
            return 0x0000, None

        return handler

    ae = AE(ae_title=args.ae)
    ae.add_requested_context(StorageCommitmentPushModel)
    server = None
    if args.mode == "new":
        # simgate opens this association and takes the SCP role (role selection).
        ae.add_supported_context(StorageCommitmentPushModel, scu_role=False, scp_role=True)
        server = ae.start_server(
            ("127.0.0.1", args.listen_port),
            block=False,
            evt_handlers=[(evt.EVT_N_EVENT_REPORT, on_report("new"))],
        )
        print(f"listening {server.server_address[1]}", flush=True)
        if args.port == 0:
            args.port = int(sys.stdin.readline())

    request = Dataset()
    request.TransactionUID = generate_uid()
    items = []
    for pair in args.instances:
        sop_class, sop_instance = pair.split(":", 1)
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_instance
        items.append(item)
    request.ReferencedSOPSequence = items

    # The report's handler runs before pynetdicom sends its N-EVENT-REPORT-RSP: releasing as
    # soon as the report is seen could overtake that answer. Release once it has been sent.
    answered = threading.Event()

    def on_sent(event):
        if type(event.message).__name__ == "N_EVENT_REPORT_RSP":
            answered.set()

    handlers = (
        [(evt.EVT_N_EVENT_REPORT, on_report("same")), (evt.EVT_DIMSE_SENT, on_sent)]
        if args.mode == "same"
        else []
    )
    assoc = ae.associate("127.0.0.1", args.port, ae_title="SIMGATE", evt_handlers=handlers)
    if not assoc.is_established:
        print(json.dumps({"error": "association not established"}), flush=True)
        return 1
    status, _ = assoc.send_n_action(request, 1, StorageCommitmentPushModel, INSTANCE)
    if status is None or status.Status != 0:
        print(json.dumps({"error": f"N-ACTION status {status}"}), flush=True)
        assoc.release()
        return 1
    print("requested " + str(request.TransactionUID), flush=True)
    if args.mode == "new":
        assoc.release()
    try:
        report = reports.get(timeout=args.wait)
    except queue.Empty:
        report = {"error": "no report"}
    if args.mode == "same" and assoc.is_established:
        answered.wait(timeout=10)
        assoc.release()
    if server is not None:
        server.shutdown()
    print(json.dumps(report), flush=True)
    return 0 if "error" not in report else 1


if __name__ == "__main__":
    sys.exit(main())
