/* static.c -- files from --static: content types, and no way out of the
 * root. The requested path is resolved with realpath() and must stay below
 * the root's own realpath, so "..", encoded dots and symlinks pointing
 * outside all end in 404.
 *
 * Files are read on the loop thread: the demo's assets are small and hot in
 * the page cache. Files above MAX_STATIC are refused rather than read. */
#include "httpd.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_STATIC (32u * 1024 * 1024)

static const struct {
  const char *ext, *type;
} types[] = {
  {".html", "text/html; charset=utf-8"},
  {".htm", "text/html; charset=utf-8"},
  {".js", "text/javascript; charset=utf-8"},
  {".mjs", "text/javascript; charset=utf-8"},
  {".css", "text/css; charset=utf-8"},
  {".json", "application/json"},
  {".map", "application/json"},
  {".svg", "image/svg+xml"},
  {".png", "image/png"},
  {".jpg", "image/jpeg"},
  {".jpeg", "image/jpeg"},
  {".gif", "image/gif"},
  {".webp", "image/webp"},
  {".ico", "image/x-icon"},
  {".txt", "text/plain; charset=utf-8"},
  {".md", "text/markdown; charset=utf-8"},
  {".wasm", "application/wasm"},
  {".woff2", "font/woff2"},
  {".ts", "text/plain; charset=utf-8"},
};

const char *httpd_content_type(const char *path) {
  const char *dot = strrchr(path, '.');
  const char *slash = strrchr(path, '/');
  if (dot && (!slash || dot > slash)) {
    for (size_t i = 0; i < WSY_ARRAY_LEN(types); i++)
      if (strcasecmp(dot, types[i].ext) == 0) return types[i].type;
  }
  return "application/octet-stream";
}

int httpd_static(const char *root, conn *c, const httpd_req *r, int head_only) {
  const char *path = httpd_req_path(r);
  char want[PATH_MAX + 64], real[PATH_MAX];
  size_t rl = strlen(root);
  if (path[0] != '/') return WSY_NOT_FOUND;
  int n = snprintf(want, sizeof want, "%s%s%s", root, path,
                   path[strlen(path) - 1] == '/' ? "index.html" : "");
  if (n < 0 || (size_t)n >= sizeof want) return WSY_NOT_FOUND;
  if (!realpath(want, real)) return WSY_NOT_FOUND;
  if (strncmp(real, root, rl) != 0 || (real[rl] != '/' && real[rl] != '\0'))
    return WSY_NOT_FOUND;
  struct stat st;
  if (stat(real, &st) != 0) return WSY_NOT_FOUND;
  if (S_ISDIR(st.st_mode)) {
    /* /dir -> /dir/ so relative links in its index resolve. */
    char loc[PATH_MAX + 32];
    snprintf(loc, sizeof loc, "Location: %.2048s/\r\n", path);
    httpd_respond(c, 301, "text/plain", loc, "", 0);
    return 0;
  }
  if (!S_ISREG(st.st_mode)) return WSY_NOT_FOUND;
  if ((uint64_t)st.st_size > MAX_STATIC) {
    httpd_error(c, 500, "file too large to serve");
    return 0;
  }
  const char *type = httpd_content_type(real);
  if (head_only) {
    httpd_respond_head(c, 200, type, "Cache-Control: no-cache\r\n", (size_t)st.st_size);
    return 0;
  }
  int fd = open(real, O_RDONLY | O_CLOEXEC);
  if (fd < 0) return WSY_NOT_FOUND;
  size_t len = (size_t)st.st_size, got = 0;
  char *data = wsy_malloc(len);
  while (got < len) {
    ssize_t k = read(fd, data + got, len - got);
    if (k < 0 && errno == EINTR) continue;
    if (k <= 0) break;
    got += (size_t)k;
  }
  close(fd);
  if (got != len) {
    wsy_free(data);
    httpd_error(c, 500, "could not read file");
    return 0;
  }
  httpd_respond(c, 200, type, "Cache-Control: no-cache\r\n", data, len);
  wsy_free(data);
  return 0;
}
