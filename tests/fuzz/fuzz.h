/*
 * Shared pieces of the libFuzzer harnesses in tests/fuzz. A harness checks
 * properties, not only survival: FUZZ_CHECK prints what failed, with both
 * sides where it can, and aborts, which libFuzzer reports as a crash and
 * saves the input for. The harnesses are deterministic in their input (no
 * clock, no random source), so every saved input replays the same run.
 */
#ifndef KV_FUZZ_H
#define KV_FUZZ_H

#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <protobuf-c/protobuf-c.h>

#include "proto/buf.h"

/* The fixed "now" of every harness: envelopes in the seed corpus are stamped
 * with it, so their timestamps pass the clock-skew check. */
#define FUZZ_NOW_MS 1700000000000ull

/* The test cluster and its key. Anything sealed with them in the corpus
 * opens in the peer harness. */
#define FUZZ_CLUSTER "fuzz"
static const uint8_t fuzz_key[32] = {
    0x6b, 0x76, 0x2d, 0x66, 0x75, 0x7a, 0x7a, 0x2d, 0x74, 0x65, 0x73,
    0x74, 0x2d, 0x6b, 0x65, 0x79, 0x00, 0x01, 0x02, 0x03, 0x04, 0x05,
    0x06, 0x07, 0x08, 0x09, 0x0a, 0x0b, 0x0c, 0x0d, 0x0e, 0x0f};

__attribute__((noreturn, format(printf, 4, 5))) static inline void
fuzz_fail(const char *file, int line, const char *cond, const char *fmt, ...) {
  fprintf(stderr, "\nfuzz check failed at %s:%d: %s\n  ", file, line, cond);
  va_list ap;
  va_start(ap, fmt);
  vfprintf(stderr, fmt, ap);
  va_end(ap);
  fputc('\n', stderr);
  fflush(stderr);
  abort();
}

/* FUZZ_CHECK(cond, fmt, ...): a property that must hold for every input. */
#define FUZZ_CHECK(cond, ...)                                                  \
  do {                                                                         \
    if (!(cond)) fuzz_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);            \
  } while (0)

/* Whether two byte strings are equal (NULL with length 0 is empty). */
static inline int fuzz_same(const void *a, size_t alen, const void *b,
                            size_t blen) {
  return alen == blen && (alen == 0 || memcmp(a, b, alen) == 0);
}

/* Prints the first bytes of two strings that should have been equal. */
static inline void fuzz_dump(const char *what, const uint8_t *p, size_t len) {
  fprintf(stderr, "  %s (%zu bytes):", what, len);
  for (size_t i = 0; i < len && i < 64; i++)
    fprintf(stderr, " %02x", p[i]);
  fprintf(stderr, len > 64 ? " ...\n" : "\n");
}

/* FUZZ_CHECK_BYTES(a, alen, b, blen, what): two byte strings are equal. */
#define FUZZ_CHECK_BYTES(a, alen, b, blen, what)                               \
  do {                                                                         \
    if (!fuzz_same((a), (alen), (b), (blen))) {                                \
      fuzz_dump("got", (const uint8_t *)(a), (alen));                          \
      fuzz_dump("want", (const uint8_t *)(b), (blen));                         \
      fuzz_fail(__FILE__, __LINE__, "bytes equal", "%s", what);                \
    }                                                                          \
  } while (0)

/* Unknown fields, hidden for a re-encoding check. protobuf-c keeps the
 * unknown fields of a message it decodes and writes them back when packing,
 * tag and all; but it accepts some tags it would refuse when written
 * minimally (field number 0 spelled as an overlong varint), so a message with
 * unknown fields need not re-encode to something it decodes again. Nothing
 * of ours ever re-encodes a message it received, so the checks are about
 * the known fields: fuzz_hide_unknown takes the unknown fields out of m and
 * all its sub-messages, fuzz_restore_unknown puts them back (the message
 * must then be freed as usual). */
typedef struct fuzz_unknowns {
  struct {
    ProtobufCMessage *m;
    unsigned n;
    ProtobufCMessageUnknownField *f;
  } * v;
  size_t n, cap;
} fuzz_unknowns;

static inline void fuzz_hide_unknown(ProtobufCMessage *m, fuzz_unknowns *u) {
  if (m->n_unknown_fields) {
    if (u->n == u->cap) {
      u->cap = u->cap ? 2 * u->cap : 16;
      u->v = kv_realloc(u->v, u->cap * sizeof *u->v);
    }
    u->v[u->n].m = m;
    u->v[u->n].n = m->n_unknown_fields;
    u->v[u->n].f = m->unknown_fields;
    u->n++;
    m->n_unknown_fields = 0;
    m->unknown_fields = NULL;
  }
  const ProtobufCMessageDescriptor *d = m->descriptor;
  char *base = (char *)m;
  for (unsigned i = 0; i < d->n_fields; i++) {
    const ProtobufCFieldDescriptor *f = &d->fields[i];
    if (f->type != PROTOBUF_C_TYPE_MESSAGE) continue;
    if (f->label == PROTOBUF_C_LABEL_REPEATED) {
      size_t n = *(size_t *)(base + f->quantifier_offset);
      ProtobufCMessage **sub = *(ProtobufCMessage ***)(base + f->offset);
      for (size_t j = 0; j < n; j++)
        fuzz_hide_unknown(sub[j], u);
      continue;
    }
    if ((f->flags & PROTOBUF_C_FIELD_FLAG_ONEOF) &&
        *(uint32_t *)(base + f->quantifier_offset) != f->id)
      continue;
    ProtobufCMessage *sub = *(ProtobufCMessage **)(base + f->offset);
    if (sub) fuzz_hide_unknown(sub, u);
  }
}

static inline void fuzz_restore_unknown(fuzz_unknowns *u) {
  for (size_t i = 0; i < u->n; i++) {
    u->v[i].m->n_unknown_fields = u->v[i].n;
    u->v[i].m->unknown_fields = u->v[i].f;
  }
  free(u->v);
  memset(u, 0, sizeof *u);
}

/* FUZZ_CHECK_REPACK(T, F, msg): msg (a T decoded by F##__unpack), its
 * unknown fields aside, re-encodes to bytes that decode and re-encode to
 * the same bytes. */
#define FUZZ_CHECK_REPACK(T, F, msg)                                           \
  do {                                                                         \
    fuzz_unknowns u_ = {0};                                                    \
    fuzz_hide_unknown(&(msg)->base, &u_);                                      \
    size_t n1_ = F##__get_packed_size(msg);                                    \
    uint8_t *b1_ = kv_malloc(n1_);                                             \
    FUZZ_CHECK(F##__pack(msg, b1_) == n1_, "packed size");                     \
    fuzz_restore_unknown(&u_);                                                 \
    T *m2_ = F##__unpack(NULL, n1_, b1_);                                      \
    FUZZ_CHECK(m2_ != NULL, "re-encoded " #T " does not decode");              \
    size_t n2_ = F##__get_packed_size(m2_);                                    \
    uint8_t *b2_ = kv_malloc(n2_);                                             \
    FUZZ_CHECK(F##__pack(m2_, b2_) == n2_, "packed size");                     \
    FUZZ_CHECK_BYTES(b2_, n2_, b1_, n1_, #T " re-encoding is not stable");     \
    F##__free_unpacked(m2_, NULL);                                             \
    free(b1_);                                                                 \
    free(b2_);                                                                 \
  } while (0)

/* splitmix64, for chunk sizes derived from the input. */
static inline uint64_t fuzz_next(uint64_t *s) {
  uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

/* The size of the next chunk to feed when splitting a stream under the
 * chunking byte c: 0 feeds everything at once, 1 one byte at a time, any
 * other value pseudo-random chunks of 1..c bytes seeded by c. */
static inline size_t fuzz_chunk(uint8_t c, uint64_t *s, size_t left) {
  size_t n = c == 0 ? left : c == 1 ? 1 : 1 + (size_t)(fuzz_next(s) % c);
  return n < left ? n : left;
}

#endif
