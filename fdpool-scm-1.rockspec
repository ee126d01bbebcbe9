-- fdpool-scm-1.rockspec: build and install fdpool with LuaRocks through
-- the project's Makefile (`luarocks make --lua-version=5.4` from the
-- source tree): the module fdpool.so, the Lua files fdpool.*, the `pool`
-- and `fdfetch` commands, the pool(1) man page and the docs.
rockspec_format = "3.0"
package = "fdpool"
version = "scm-1"

source = {
   -- Placeholder: set to the project's public repository before
   -- uploading (`luarocks make` builds from the current directory and
   -- never fetches it).
   url = "git+https://example.invalid/fdpool.git",
}

description = {
   summary = "A Lua-scriptable prefork process pool (fd passing with SCM_RIGHTS)",
   detailed = [[
fdpool is a prefork process pool for TCP and unix-socket servers whose
dispatch policy and request handlers are written in Lua 5.4. A C core
owns the worker processes, hands each accepted connection's descriptor
to a worker over a socketpair (SCM_RIGHTS) and keeps the worker table;
`pool run handler.lua` serves, `require "fdpool"` gives the same pool to
any Lua program, and fdpool.http adds HTTP/1.1.
]],
   license = "not chosen yet",
   labels = { "server", "prefork", "fd-passing", "http" },
}

supported_platforms = { "linux" }

dependencies = {
   "lua >= 5.4, < 5.5",
}

-- c-ares: fdpool.tcp()'s resolver (Debian: libc-ares-dev).
external_dependencies = {
   CARES = { header = "ares.h", library = "cares" },
}

build = {
   type = "make",
   build_target = "all",
   build_variables = {
      CFLAGS = "$(CFLAGS)",
      LUA_CFLAGS = "-I$(LUA_INCDIR)",
      CARES_CFLAGS = "-I$(CARES_INCDIR)",
      CARES_LIBS = "-L$(CARES_LIBDIR) -lcares",
      LUA = "$(LUA)",
   },
   install_target = "install",
   install_variables = {
      PREFIX = "$(PREFIX)",
      BINDIR = "$(BINDIR)",
      LUA_CMOD = "$(LIBDIR)",
      LUA_LMOD = "$(LUADIR)",
      MANDIR = "$(PREFIX)/man",
      DOCDIR = "$(PREFIX)/doc",
      LUA = "$(LUA)",
   },
}
