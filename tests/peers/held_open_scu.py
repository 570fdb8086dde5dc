"""A sender that keeps one association open across a configuration reload, on pynetdicom.

Associates with the gateway (HOST PORT CALLED_AE), stores the first file given, prints
"stored 1 0x0000" (the status), then waits for a line on its standard input before storing
each next file on the same association, and prints "released" at the end. Any failure to
associate or an aborted association is printed and ends it with exit code 1.
"""

import sys

from pydicom import dcmread
from pynetdicom import AE

host, port, called, files = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4:]
datasets = [dcmread(f) for f in files]
ae = AE(ae_title="CTSIM")
for sop_class in sorted({str(ds.SOPClassUID) for ds in datasets}):
    ae.add_requested_context(sop_class, "1.2.840.10008.1.2.1")
assoc = ae.associate(host, port, ae_title=called)
if not assoc.is_established:
    print("not associated", flush=True)
    sys.exit(1)
for n, ds in enumerate(datasets, start=1):
    if n > 1:
        sys.stdin.readline()
    if not assoc.is_established:
        print("association lost", flush=True)
        sys.exit(1)
    status = assoc.send_c_store(ds)
    print(f"stored {n} 0x{int(status.Status):04x}" if status else f"stored {n} none", flush=True)
assoc.release()
print("released", flush=True)
