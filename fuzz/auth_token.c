/* libFuzzer target: token verification on arbitrary input. Invariants: no
 * crash or leak; a token accepted has a valid user id; a token never
 * verifies under a different secret. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "../src/auth/auth.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *token = malloc(size + 1);
  memcpy(token, data, size);
  token[size] = '\0';
  auth_identity id;
  if (auth_verify("fuzz-secret", token, 1900000000, &id) == AUTH_OK) {
    if (!id.user || !auth_user_valid(id.user, strlen(id.user))) __builtin_trap();
    auth_room_perms(&id, "board:1");
    auth_room_perms(&id, "user:x");
    auth_identity_free(&id);
    auth_identity other;
    if (auth_verify("another-secret", token, 1900000000, &other) == AUTH_OK) __builtin_trap();
  }
  free(token);
  return 0;
}
