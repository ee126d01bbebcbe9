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
                "http_parse", "status", "embed", "statuspage_html" } },
    { name = "master",
      files = { "policy", "acceptf", "listen", "dispatch", "pool", "statuspage",
                "control", "ctlclient" } },
    { name = "worker",
      files = { "task", "lconn", "lhttp", "worker" } },
    { name = "binding",
      files = { "lfd", "lpool", "lfdpool", "main" } },
  },
  -- TEMPORARY (issue 11, until the worker-side redesign "R2" is merged):
  -- known violations among the worker and binding files, R2's side ONLY.
  -- Each entry is "from>to" (from's object uses a symbol defined by to's).
  -- The lead removes this list after merging R2.
  allow = {
    "lconn>lfdpool",    -- fdp_fd_fileno: the fd object lives in the binding
    "worker>lfdpool",   -- fdp_module_set_worker
    "lconn>worker",     -- fdp_wait, fdp_conn_park...: lconn <-> worker loop
  },
}
