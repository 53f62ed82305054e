"""A PJSIP phone (the pjsua2 Python binding) driven line by line on stdin, for system tests.

    python3 pjsua_phone.py <gateway host:port> <user> <password|-> [srtp] [tls=<CA file>]

Registers <user> at the gateway unless the password is `-` (then it only places calls), answers every
incoming call with 200, and takes commands: `call <uri>`, `dtmf <digits>` (RFC 4733), `hold`,
`unhold`, `transfer <uri>` (a blind transfer: REFER), `hangup`, `quit`. It prints one line per event: `reg <code> <reason>`, `incoming`,
`state <STATE> <code>`, `media active|held`, `dtmf <digit>`, `rx <packets> SAVP|AVP` (RTP received so far and the
stream's profile), `xfer <code>` (each NOTIFY of our REFER),
`command failed: ...`. With `tls=<CA file>` it speaks SIP over TLS to the gateway (a TLS port) and
verifies the gateway's certificate against that file.
"""
import queue
import sys
import threading

import pjsua2 as pj

gateway, user, password = sys.argv[1], sys.argv[2], sys.argv[3]
flags = sys.argv[4:]
srtp = "srtp" in flags
tls_ca = next((f[4:] for f in flags if f.startswith("tls=")), None)
calls = []


def say(*words):
    print(*words, flush=True)


class Call(pj.Call):
    def onCallState(self, prm):
        ci = self.getInfo()
        say("state", ci.stateText.upper(), ci.lastStatusCode)

    def onCallMediaState(self, prm):
        ci = self.getInfo()
        for mi in ci.media:
            if mi.type != pj.PJMEDIA_TYPE_AUDIO:
                continue
            if mi.status == pj.PJSUA_CALL_MEDIA_ACTIVE:
                say("media active")
            elif mi.status in (pj.PJSUA_CALL_MEDIA_LOCAL_HOLD, pj.PJSUA_CALL_MEDIA_REMOTE_HOLD):
                say("media held")

    def onCallTransferStatus(self, prm):
        # The NOTIFYs of our REFER: the transfer's progress, as a SIP status.
        say("xfer", prm.statusCode)

    def onDtmfDigit(self, prm):
        say("dtmf", prm.digit)


class Account(pj.Account):
    def onRegState(self, prm):
        say("reg", prm.code, prm.reason)

    def onIncomingCall(self, prm):
        call = Call(self, prm.callId)
        calls.append(call)
        say("incoming")
        op = pj.CallOpParam()
        op.statusCode = 200
        call.answer(op)


ep = pj.Endpoint()
ep.libCreate()
cfg = pj.EpConfig()
cfg.uaConfig.threadCnt = 0
cfg.uaConfig.mainThreadOnly = True
cfg.logConfig.level = 1
cfg.logConfig.consoleLevel = 1
ep.libInit(cfg)
tcfg = pj.TransportConfig()
tcfg.port = 0
tcfg.boundAddress = "127.0.0.1"
if tls_ca:
    tcfg.tlsConfig.CaListFile = tls_ca
    tcfg.tlsConfig.verifyServer = True
    ep.transportCreate(pj.PJSIP_TRANSPORT_TLS, tcfg)
else:
    ep.transportCreate(pj.PJSIP_TRANSPORT_UDP, tcfg)
ep.libStart()
ep.audDevManager().setNullDev()

acfg = pj.AccountConfig()
suffix = ";transport=tls" if tls_ca else ""
acfg.idUri = f"sip:{user}@{gateway}{suffix}"
if password != "-":
    acfg.regConfig.registrarUri = f"sip:{gateway}{suffix}"
    acfg.sipConfig.authCreds.append(pj.AuthCredInfo("digest", "*", user, 0, password))
acfg.mediaConfig.transportConfig.boundAddress = "127.0.0.1"
# Any free RTP port (pjsua starts at 4000 otherwise, which phones running side by side share).
acfg.mediaConfig.transportConfig.port = 0
if srtp:
    acfg.mediaConfig.srtpUse = pj.PJMEDIA_SRTP_MANDATORY
    acfg.mediaConfig.srtpSecureSignaling = 0
account = Account()
account.create(acfg)
say("ready")

commands = queue.Queue()


def read_stdin():
    for line in sys.stdin:
        commands.put(line.strip())
    commands.put("quit")


threading.Thread(target=read_stdin, daemon=True).start()

running = True
while running:
    ep.libHandleEvents(20)
    while not commands.empty():
        words = commands.get().split()
        if not words:
            continue
        cmd, args = words[0], words[1:]
        try:
            if cmd == "call":
                call = Call(account)
                calls.append(call)
                call.makeCall(args[0], pj.CallOpParam(True))
            elif cmd == "dtmf":
                calls[-1].dialDtmf(args[0])
            elif cmd == "hold":
                calls[-1].setHold(pj.CallOpParam(True))
            elif cmd == "unhold":
                op = pj.CallOpParam(True)
                op.opt.flag = pj.PJSUA_CALL_UNHOLD
                calls[-1].reinvite(op)
            elif cmd == "transfer":
                calls[-1].xfer(args[0], pj.CallOpParam(True))
            elif cmd == "hangup":
                calls[-1].hangup(pj.CallOpParam(True))
            elif cmd == "rx":
                stat = calls[-1].getStreamStat(0)
                info = calls[-1].getStreamInfo(0)
                secure = info.proto in (pj.PJMEDIA_TP_PROTO_RTP_SAVP, pj.PJMEDIA_TP_PROTO_RTP_SAVPF)
                say("rx", stat.rtcp.rxStat.pkt, "SAVP" if secure else "AVP")
            elif cmd == "quit":
                running = False
        except pj.Error as e:
            say("command failed:", cmd, e.info())
ep.hangupAllCalls()
ep.libHandleEvents(50)
