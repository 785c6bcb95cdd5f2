/*
 * Length-prefixed framing for the client and peer protocols: a 4-byte
 * big-endian length, then that many bytes of message. The reader is sans-I/O
 * in the hiredis shape: feed it whatever bytes arrived, then take whole frames
 * out. A length above the reader's maximum is rejected as soon as the 4-byte
 * header is seen, before anything is allocated for the body, and the error is
 * sticky: the connection is to be closed.
 */
#ifndef KV_FRAME_H
#define KV_FRAME_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "proto/buf.h"
#include "proto/kv_err.h"

#define KV_FRAME_HEADER 4

typedef struct kv_frame_reader kv_frame_reader;

/* A reader accepting frames of at most max_frame bytes (body, header
 * excluded). Caller frees with kv_frame_reader_free. */
kv_frame_reader *kv_frame_reader_new(size_t max_frame);

/* NULL does nothing. */
void kv_frame_reader_free(kv_frame_reader *r);

/* Appends len bytes at p (copied). Returns KV_OK, or the sticky error if the
 * reader has already failed. */
KV_WARN_UNUSED int kv_frame_reader_feed(kv_frame_reader *r, const void *p,
                                        size_t len);

/* Takes the next whole frame. On KV_OK, *frame points at the body inside the
 * reader's buffer: borrowed until the next feed, next or free call.
 * Returns KV_AGAIN when no whole frame is buffered yet, KV_FRAME_TOO_LARGE
 * (sticky) when a header announces more than max_frame bytes. */
KV_WARN_UNUSED int kv_frame_reader_next(kv_frame_reader *r, kv_buf *frame);

/* Bytes buffered but not yet returned as frames (for memory accounting). */
size_t kv_frame_reader_pending(const kv_frame_reader *r);

/* Writes the 4-byte header for a body of len bytes into hdr. len must be
 * below 2^32 (a broken invariant otherwise: senders bound their messages). */
void kv_frame_header(uint8_t hdr[KV_FRAME_HEADER], size_t len);

#endif
