-- tests/arch_layers.lua: the layer table of src/, read by scripts/archcheck.lua
-- (and the architecture spec). docs/ARCHITECTURE.md lists the same files in
-- the same order; keep the two in sync.
--
-- A file may use symbols only from files of its own layer or a lower one,
-- and no two files may use each other, directly or round a loop.
return {
  layers = {
    { name = "ground",
      files = { "log", "loop", "fdpass", "channel", "addr", "proxy", "ctlproto",
                "http_parse", "wsproto", "shdict", "status", "tls", "embed", "statuspage_html",
                "dns" } },
    { name = "master",
      files = { "policy", "acceptf", "listen", "dispatch", "upgrade", "shzone", "pool",
                "statuspage", "control", "ctlclient" } },
    { name = "worker",
      files = { "laux", "task", "lthread", "lshared", "lconn", "ltls", "lhttp", "lsock", "lws",
                "worker" } },
    { name = "binding",
      files = { "lfd", "lpool", "lfdpool", "main" } },
  },
  allow = {},
}
