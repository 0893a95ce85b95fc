# nbdsh script for record-nbdkit-tls.sh.
#   NBD_TLS=2: require TLS with a PSK (NBD_PSK file, user NBD_USER): STARTTLS in plaintext, then
#              everything else inside TLS (GO, READ, DISC).
#   NBD_TLS=0: no TLS against a TLS-only server, in opt mode: every option is refused with
#              NBD_REP_ERR_TLS_REQD; then NBD_OPT_ABORT.
import os
import nbd

uri = os.environ["NBD_URI"]
tls = int(os.environ.get("NBD_TLS", "2"))


def say(**kv):
    print("script: " + " ".join(f"{k}={v}" for k, v in kv.items()), flush=True)


if tls:
    h.set_tls(tls)
    h.set_tls_psk_file(os.environ["NBD_PSK"])
    h.set_tls_username(os.environ["NBD_USER"])
    h.connect_uri(uri)
    say(event="tls", negotiated=h.get_tls_negotiated())
    buf = h.pread(4096, 0)
    h.shutdown()
else:
    h.set_tls(0)
    h.set_opt_mode(True)
    h.set_request_structured_replies(False)
    h.connect_uri(uri)
    for name, fn in (("NBD_OPT_LIST", lambda: h.opt_list(lambda n, d: 0)), ("NBD_OPT_INFO", h.opt_info),
                     ("NBD_OPT_GO", h.opt_go)):
        try:
            fn()
        except nbd.Error as e:
            print(f"script-note: {name} refused: {e}", flush=True)
            say(event="option-refused", option=name)  # libnbd does not say which error type
    h.opt_abort()
