/*
 * One rectangle of a JPEG, decoded with libjpeg's own API (libjpeg-turbo's libjpeg.so.62):
 * `jpeg_skip_scanlines` skips the IDCT and colour conversion of the rows above it (their
 * entropy-coded data is still read, as it must be), `jpeg_crop_scanline` those of the
 * columns beside it, and reading stops after its last row.
 *
 * Why C: libjpeg reports errors by calling `error_exit`, which must not return; the only
 * portable way out is setjmp/longjmp, which Rust cannot do. This file is the smallest
 * wrapper that turns that into a return code. The Rust side is `images/region.rs`.
 *
 * Exactness: libjpeg's fancy upsampling reads the neighbouring chroma sample, and at the
 * edge of a cropped or skipped region it treats that edge as the image's edge. So the
 * decoder is given MARGIN more pixels on every side (where the image has them) and the
 * rectangle is cut from the inside; the pixels are then those of a full decode (checked by
 * `region::tests`).
 */
#include <setjmp.h>
#include <stddef.h>
#include <stdio.h>

#include <jpeglib.h>
#include <jerror.h>

#define MARGIN 16

struct guard {
  struct jpeg_error_mgr pub;
  jmp_buf jump;
  int truncated;
};

static void on_error(j_common_ptr cinfo) {
  struct guard *g = (struct guard *)cinfo->err;
  longjmp(g->jump, 1);
}

/* Warnings are ignored as PIL ignores them, except a premature end of data (PIL's "image
 * file is truncated"), which is remembered and reported as an error. */
static void on_message(j_common_ptr cinfo, int level) {
  struct guard *g = (struct guard *)cinfo->err;
  if (level < 0 && cinfo->err->msg_code == JWRN_JPEG_EOF) g->truncated = 1;
}

static void message(j_common_ptr cinfo, char *err, size_t errlen) {
  char buf[JMSG_LENGTH_MAX];
  cinfo->err->format_message(cinfo, buf);
  snprintf(err, errlen, "%s", buf);
}

/* The header: width, height and libjpeg's colour space (J_COLOR_SPACE). 0 = ok. */
int lm4ve_jpeg_header(const unsigned char *buf, unsigned long len, unsigned int *width,
                      unsigned int *height, int *color, char *err, size_t errlen) {
  struct jpeg_decompress_struct cinfo;
  struct guard g;
  cinfo.err = jpeg_std_error(&g.pub);
  g.pub.error_exit = on_error;
  g.pub.emit_message = on_message;
  g.truncated = 0;
  if (setjmp(g.jump)) {
    message((j_common_ptr)&cinfo, err, errlen);
    jpeg_destroy_decompress(&cinfo);
    return 1;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, buf, len);
  jpeg_read_header(&cinfo, TRUE);
  *width = cinfo.image_width;
  *height = cinfo.image_height;
  *color = (int)cinfo.jpeg_color_space;
  jpeg_destroy_decompress(&cinfo);
  return 0;
}

/*
 * Decodes columns [x, x + w) of rows [y, y + h) of the image, packed RGB, straight into
 * `out` (no copy): row r of the rectangle at out + r·stride·3, its pixel 0 at column
 * *x_in_row, where *stride (pixels) is the width libjpeg decoded (the rectangle plus margins,
 * widened to iMCU boundaries). Needs stride·h·3 ≤ out_cap. Gray JPEGs come out as RGB with
 * the value repeated (libjpeg's gray → RGB), YCbCr and RGB ones as RGB. Returns 0 = ok,
 * 1 = error (message in `err`), 2 = not handled here (CMYK/YCCK, a rectangle outside the
 * image, `out` too small): the caller decodes the whole image instead.
 */
int lm4ve_jpeg_region(const unsigned char *buf, unsigned long len, unsigned int x,
                      unsigned int y, unsigned int w, unsigned int h, unsigned char *out,
                      size_t out_cap, unsigned int *stride, unsigned int *x_in_row, char *err,
                      size_t errlen) {
  struct jpeg_decompress_struct cinfo;
  struct guard g;
  cinfo.err = jpeg_std_error(&g.pub);
  g.pub.error_exit = on_error;
  g.pub.emit_message = on_message;
  g.truncated = 0;
  if (setjmp(g.jump)) {
    message((j_common_ptr)&cinfo, err, errlen);
    jpeg_destroy_decompress(&cinfo);
    return 1;
  }
  jpeg_create_decompress(&cinfo);
  jpeg_mem_src(&cinfo, buf, len);
  jpeg_read_header(&cinfo, TRUE);
  switch (cinfo.jpeg_color_space) {
    case JCS_GRAYSCALE:
    case JCS_YCbCr:
    case JCS_RGB:
      break;
    default:
      jpeg_destroy_decompress(&cinfo);
      return 2;
  }
  cinfo.out_color_space = JCS_RGB;
  jpeg_start_decompress(&cinfo);
  JDIMENSION ow = cinfo.output_width, oh = cinfo.output_height;
  if (w == 0 || h == 0 || x > ow || w > ow - x || y > oh || h > oh - y) {
    jpeg_destroy_decompress(&cinfo);
    return 2;
  }
  JDIMENSION x0 = x > MARGIN ? x - MARGIN : 0;
  JDIMENSION x1 = ow - (x + w) > MARGIN ? x + w + MARGIN : ow;
  JDIMENSION y0 = y > MARGIN ? y - MARGIN : 0;
  JDIMENSION cw = x1 - x0;
  /* Moves x0 left to an iMCU boundary and widens cw to match. */
  if (cw < ow) jpeg_crop_scanline(&cinfo, &x0, &cw);
  if ((size_t)cw * h * 3 > out_cap) {
    jpeg_destroy_decompress(&cinfo);
    return 2;
  }
  if (y0 > 0) jpeg_skip_scanlines(&cinfo, y0);
  while (cinfo.output_scanline < y + h) {
    JDIMENSION r = cinfo.output_scanline;
    /* The margin rows above the rectangle land in its first row, overwritten after. */
    JSAMPROW row = out + (size_t)(r >= y ? r - y : 0) * cw * 3;
    if (jpeg_read_scanlines(&cinfo, &row, 1) != 1) break;
  }
  int short_read = cinfo.output_scanline < y + h;
  jpeg_abort_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  if (g.truncated || short_read) {
    snprintf(err, errlen, "truncated JPEG (Premature end of JPEG file)");
    return 1;
  }
  *stride = cw;
  *x_in_row = x - x0;
  return 0;
}
