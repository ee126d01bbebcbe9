# fdpool - a Lua-scriptable prefork process pool.
# make            build/pool, build/fdpool.so, build/fdfetch
# make test       C unit tests, then the busted suite (scripts/test)
# make asan       the same build with AddressSanitizer/UBSan in build-asan/
# make install    PREFIX, DESTDIR, BINDIR, LUA_CMOD, LUA_LMOD, MANDIR, DOCDIR
#                 as below; make uninstall removes exactly those files
# LUA_STATIC=     build/pool with the shared liblua instead of lib$(LUA_PC).a

PREFIX   ?= /usr/local
DESTDIR  ?=
BINDIR   ?= $(PREFIX)/bin
LUA_PC   ?= lua5.4
LUA_CFLAGS ?= $(shell pkg-config --cflags $(LUA_PC) 2>/dev/null || echo -I/usr/include/lua5.4)
LUA_LIBS   ?= $(shell pkg-config --libs $(LUA_PC) 2>/dev/null || echo -llua5.4)
# build/pool links Lua statically when the toolchain has lib$(LUA_PC).a
# (Debian's liblua5.4-dev does): calls into Lua without the PLT, ~2 % fewer
# instructions per keep-alive request (docs/performance.md). -rdynamic
# exports lua_* from the pool for the C modules handlers load (cjson).
# LUA_STATIC= (empty) links the shared library as before.
LUA_STATIC ?= $(shell $(CC) -print-file-name=lib$(LUA_PC).a 2>/dev/null)
POOL_LUA_LIBS ?= $(if $(filter /%,$(LUA_STATIC)),-rdynamic $(LUA_STATIC) -ldl,$(LUA_LIBS))
LUA_CMOD ?= $(PREFIX)/lib/lua/5.4
LUA_LMOD ?= $(PREFIX)/share/lua/5.4
MANDIR   ?= $(PREFIX)/share/man
DOCDIR   ?= $(PREFIX)/share/doc/fdpool
LUA      ?= lua5.4
# OpenSSL 3 (libssl-dev): TLS listeners and conn:sslhandshake().
SSL_PC   ?= openssl
SSL_CFLAGS ?= $(shell pkg-config --cflags $(SSL_PC) 2>/dev/null)
SSL_LIBS   ?= $(shell pkg-config --libs $(SSL_PC) 2>/dev/null || echo -lssl -lcrypto)
# c-ares: fdpool.tcp()'s resolver (src/dns.c).
CARES_CFLAGS ?= $(shell pkg-config --cflags libcares 2>/dev/null)
CARES_LIBS   ?= $(shell pkg-config --libs libcares 2>/dev/null || echo -lcares)

CC       ?= cc
OPT      ?= -O3 -g
WARN     := -Wall -Wextra -Wshadow -Wwrite-strings -Wmissing-prototypes \
            -Wstrict-prototypes
CFLAGS   ?=
ALLCFLAGS = -std=c99 -D_GNU_SOURCE $(OPT) $(WARN) -fPIC $(LUA_CFLAGS) \
            $(CARES_CFLAGS) $(SSL_CFLAGS) -Isrc -I$(B) $(SAN) $(CFLAGS)
LDFLAGS  ?=
B        ?= build
SAN      ?=

CORE     := log fdpass channel loop addr status ctlproto proxy http_parse wsproto shdict listen dispatch shzone pool acceptf \
            control ctlclient statuspage policy laux task lthread lshared lconn lhttp lws worker lfd lpool lfdpool \
            dns lsock tls ltls
# pool upgrade (issue 19)
CORE     += upgrade
LUAFILES := $(sort $(wildcard lua/fdpool/*.lua lua/fdpool/*/*.lua))
CORE_OBJ := $(patsubst %,$(B)/%.o,$(CORE)) $(B)/embed.o \
            $(B)/statuspage_html.o
HEADERS  := $(wildcard src/*.h)

all: $(B)/pool $(B)/fdpool.so $(B)/fdfetch

$(B):
	mkdir -p $(B)

$(B)/embed.c: $(LUAFILES) scripts/embed.lua | $(B)
	$(LUA) scripts/embed.lua $@ $(LUAFILES)

$(B)/%.o: src/%.c $(HEADERS) | $(B)
	$(CC) $(ALLCFLAGS) -c -o $@ $<

$(B)/embed.o: $(B)/embed.c src/embed.h
	$(CC) $(ALLCFLAGS) -c -o $@ $<

# The status page (GET /status on --metrics), embedded as one string.
$(B)/statuspage_html.c: src/statuspage.html scripts/embed.lua | $(B)
	$(LUA) scripts/embed.lua --blob fdp_statuspage_html $@ src/statuspage.html

$(B)/statuspage_html.o: $(B)/statuspage_html.c
	$(CC) $(ALLCFLAGS) -c -o $@ $<

$(B)/pool: $(CORE_OBJ) $(B)/main.o
	$(CC) $(SAN) $(LDFLAGS) -o $@ $^ $(POOL_LUA_LIBS) $(CARES_LIBS) $(SSL_LIBS) -lm

# The module leaves Lua's symbols to the interpreter that loads it.
$(B)/fdpool.so: $(CORE_OBJ)
	$(CC) $(SAN) $(LDFLAGS) -shared -o $@ $^ $(CARES_LIBS) $(SSL_LIBS)

$(B)/fdfetch: src/fdfetch.c | $(B)
	$(CC) -std=c99 -D_GNU_SOURCE $(OPT) $(WARN) $(SAN) $(CFLAGS) -o $@ $<

$(B)/test_core: tests/c/test_core.c $(B)/fdpass.o $(B)/channel.o $(B)/loop.o \
                $(B)/status.o $(B)/log.o $(B)/http_parse.o $(B)/proxy.o \
                $(B)/shdict.o $(B)/wsproto.o
	$(CC) $(ALLCFLAGS) $(LDFLAGS) -o $@ $^

setup:
	scripts/setup

test:
	scripts/run-tests

check: test

asan:
	$(MAKE) B=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	    SAN="-fsanitize=address,undefined -fno-sanitize-recover=undefined"


run:
	scripts/setup
	$(MAKE) all
	$(B)/pool run

fuzz:
	scripts/fuzz $(FUZZ_SECONDS)

bench: all
	scripts/bench

DOCS     := README.md $(wildcard docs/*.md docs/*.png)
EXAMPLES := $(wildcard examples/*.lua) $(wildcard examples/systemd/*)

install: all
	install -d "$(DESTDIR)$(BINDIR)" "$(DESTDIR)$(LUA_CMOD)" \
	    "$(DESTDIR)$(LUA_LMOD)/fdpool/policy" "$(DESTDIR)$(LUA_LMOD)/fdpool/testing" \
	    "$(DESTDIR)$(LUA_LMOD)/fdpool/http" \
	    "$(DESTDIR)$(MANDIR)/man1" \
	    "$(DESTDIR)$(DOCDIR)/examples/systemd"
	install -m 755 $(B)/pool $(B)/fdfetch "$(DESTDIR)$(BINDIR)/"
	install -m 755 $(B)/fdpool.so "$(DESTDIR)$(LUA_CMOD)/fdpool.so"
	for f in $(LUAFILES); do \
	    install -m 644 $$f "$(DESTDIR)$(LUA_LMOD)/$${f#lua/}" || exit 1; done
	install -m 644 docs/pool.1 "$(DESTDIR)$(MANDIR)/man1/pool.1"
	install -m 644 $(DOCS) "$(DESTDIR)$(DOCDIR)/"
	for f in $(EXAMPLES); do \
	    install -m 644 $$f "$(DESTDIR)$(DOCDIR)/$$f" || exit 1; done

# Only what install put there: the fdpool directories under LUA_LMOD and
# DOCDIR are fdpool's own; shared directories (bin, man1, ...) stay.
uninstall:
	rm -f "$(DESTDIR)$(BINDIR)/pool" "$(DESTDIR)$(BINDIR)/fdfetch" \
	    "$(DESTDIR)$(LUA_CMOD)/fdpool.so" "$(DESTDIR)$(MANDIR)/man1/pool.1"
	rm -rf "$(DESTDIR)$(LUA_LMOD)/fdpool" "$(DESTDIR)$(DOCDIR)"

print:
	@echo PREFIX=$(PREFIX) BINDIR=$(BINDIR) LUA_CMOD=$(LUA_CMOD) \
	    LUA_LMOD=$(LUA_LMOD) MANDIR=$(MANDIR) DOCDIR=$(DOCDIR) LUA_CFLAGS=$(LUA_CFLAGS) LUA_LIBS=$(LUA_LIBS)

clean:
	rm -rf build build-asan build-fuzz

.PHONY: all setup test check asan fuzz run bench install uninstall \
        print clean
