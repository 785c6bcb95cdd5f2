/*
 * SWIM messages on the wire (DESIGN §3): kv_swim_msg to and from the Swim
 * body of a peer message (proto/peer.proto). Kept apart from the protocol
 * logic in membership.c; pure like it (no I/O, clock or randomness), so the
 * fuzzer drives decode and the core together.
 */
#include <stdlib.h>
#include <string.h>

#include "proto/peer.pb-c.h"
#include "sync/membership.h"

void kv_swim_encode(const kv_swim_msg *m, kv_buf *out) {
  Kvpb__PeerMessage pm = KVPB__PEER_MESSAGE__INIT;
  Kvpb__Swim sw = KVPB__SWIM__INIT;
  pm.body_case = KVPB__PEER_MESSAGE__BODY_SWIM;
  pm.swim = &sw;
  sw.type = m->type;
  sw.seq = m->seq;
  sw.from = m->from;
  sw.from_addr = (char *)(m->from_addr ? m->from_addr : "");
  sw.target = m->target;
  sw.target_addr = (char *)(m->target_addr ? m->target_addr : "");
  sw.join = m->join;
  sw.reply = m->reply;
  Kvpb__SwimUpdate *us = kv_calloc(m->nupdates + 1, sizeof *us);
  Kvpb__SwimUpdate **up = kv_calloc(m->nupdates + 1, sizeof *up);
  for (size_t i = 0; i < m->nupdates; i++) {
    const kv_swim_update *u = &m->updates[i];
    kvpb__swim_update__init(&us[i]);
    us[i].id = u->id;
    us[i].incarnation = u->incarnation;
    us[i].state = u->state;
    us[i].from = u->from;
    us[i].name = (char *)(u->name ? u->name : "");
    us[i].addr = (char *)(u->addr ? u->addr : "");
    up[i] = &us[i];
  }
  sw.n_updates = m->nupdates;
  sw.updates = up;
  out->len = kvpb__peer_message__get_packed_size(&pm);
  out->data = kv_malloc(out->len ? out->len : 1);
  kvpb__peer_message__pack(&pm, out->data);
  free(us);
  free(up);
}

int kv_swim_decode(const struct Kvpb__Swim *sw, kv_swim_decoded *d) {
  memset(d, 0, sizeof *d);
  if (sw->n_updates > KV_SWIM_MAX_UPDATES) return KV_BAD_REQUEST;
  for (size_t i = 0; i < sw->n_updates; i++)
    if (sw->updates[i]->state < KV_SWIM_ALIVE ||
        sw->updates[i]->state > KV_SWIM_LEFT)
      return KV_BAD_REQUEST;
  d->ups = kv_calloc(sw->n_updates + 1, sizeof *d->ups);
  for (size_t i = 0; i < sw->n_updates; i++) {
    const Kvpb__SwimUpdate *u = sw->updates[i];
    d->ups[i] = (kv_swim_update){.id = u->id,
                                 .incarnation = u->incarnation,
                                 .state = (kv_swim_state)u->state,
                                 .from = u->from,
                                 .name = *u->name ? u->name : NULL,
                                 .addr = *u->addr ? u->addr : NULL};
  }
  d->msg = (kv_swim_msg){.type = (kv_swim_msg_type)sw->type,
                         .seq = sw->seq,
                         .from = sw->from,
                         .from_addr = *sw->from_addr ? sw->from_addr : NULL,
                         .target = sw->target,
                         .target_addr =
                             *sw->target_addr ? sw->target_addr : NULL,
                         .join = sw->join,
                         .reply = sw->reply,
                         .updates = d->ups,
                         .nupdates = sw->n_updates};
  return KV_OK;
}

void kv_swim_decoded_fini(kv_swim_decoded *d) {
  free(d->ups);
  memset(d, 0, sizeof *d);
}
