#include "dispatch/protocol/text.hpp"

#include <gtest/gtest.h>

namespace dispatch::protocol {
namespace {

TEST(Text, Utf8Validity) {
  EXPECT_TRUE(is_valid_utf8(""));
  EXPECT_TRUE(is_valid_utf8("plain ascii that is longer than eight bytes"));
  EXPECT_TRUE(is_valid_utf8("caf\xC3\xA9 \xE2\x82\xAC \xF0\x9F\x98\x80"));  // é € 😀
  EXPECT_TRUE(is_valid_utf8("\xF4\x8F\xBF\xBF"));                           // U+10FFFF
  EXPECT_FALSE(is_valid_utf8("\xFF"));
  EXPECT_FALSE(is_valid_utf8("\xC0\xAF"));          // overlong '/'
  EXPECT_FALSE(is_valid_utf8("\xE0\x80\xAF"));      // overlong
  EXPECT_FALSE(is_valid_utf8("\xED\xA0\x80"));      // surrogate D800
  EXPECT_FALSE(is_valid_utf8("\xF4\x90\x80\x80"));  // past U+10FFFF
  EXPECT_FALSE(is_valid_utf8("abcdefgh\xE2\x82"));  // cut at the end
  EXPECT_FALSE(is_valid_utf8("\x80"));              // lone continuation
}

TEST(Text, RepairReplacesMaximalSubparts) {
  EXPECT_EQ(make_valid_utf8("ok"), "ok");
  EXPECT_EQ(make_valid_utf8("a\xFF"
                            "b"),
            "a\xEF\xBF\xBD"
            "b");
  EXPECT_EQ(make_valid_utf8("\xE2\x82"), "\xEF\xBF\xBD");  // one U+FFFD for a cut sequence
  EXPECT_EQ(make_valid_utf8("\xE2\x82"
                            "A"),
            "\xEF\xBF\xBD"
            "A");
  EXPECT_EQ(make_valid_utf8("\xC3\xA9\xED\xA0\x80"),
            "\xC3\xA9\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD");
  EXPECT_TRUE(is_valid_utf8(make_valid_utf8(std::string("\x00\xFE\xF0\x9F\x98", 5))));
}

TEST(Text, TruncateNeverCutsACharacter) {
  const std::string text =
      "ab\xE2\x82\xAC"
      "cd";  // a b € c d
  EXPECT_EQ(truncate_utf8(text, 100), text);
  EXPECT_EQ(truncate_utf8(text, 2), "ab");
  EXPECT_EQ(truncate_utf8(text, 3), "ab");
  EXPECT_EQ(truncate_utf8(text, 4), "ab");
  EXPECT_EQ(truncate_utf8(text, 5), "ab\xE2\x82\xAC");
  EXPECT_EQ(truncate_utf8(text, 0), "");
}

TEST(Text, DataUrlsAndBase64) {
  EXPECT_EQ(strip_data_url("data:image/png;base64,iVBOR"), "iVBOR");
  EXPECT_EQ(strip_data_url("DATA:image/jpeg;BASE64,/9j/"), "/9j/");
  EXPECT_EQ(strip_data_url("iVBOR"), "iVBOR");
  EXPECT_EQ(strip_data_url("data:text/plain,hello"), "data:text/plain,hello");
  EXPECT_EQ(strip_data_url("data:image/png;base64"), "data:image/png;base64");

  EXPECT_TRUE(is_base64("iVBORw0KGgo="));
  EXPECT_TRUE(is_base64("aGk="));
  EXPECT_TRUE(is_base64("YQ=="));
  EXPECT_TRUE(is_base64("ab+/"));
  EXPECT_FALSE(is_base64(""));
  EXPECT_FALSE(is_base64("===="));
  EXPECT_FALSE(is_base64("a=b="));
  EXPECT_FALSE(is_base64("ab cd"));
  EXPECT_FALSE(is_base64("ab\ncd"));
  EXPECT_FALSE(is_base64("ab-_"));  // URL-safe alphabet is not what providers take

  EXPECT_EQ(sniff_image_media_type("iVBORw0KGgoAAAANSUhEUg=="), "image/png");
  EXPECT_EQ(sniff_image_media_type("/9j/4AAQSkZJRg=="), "image/jpeg");
  EXPECT_EQ(sniff_image_media_type("R0lGODlhAQABAIAAAP"), "image/gif");
  EXPECT_EQ(sniff_image_media_type("UklGRiQAAABXRUJQVlA4"), "image/webp");
  EXPECT_EQ(sniff_image_media_type("UklGRiQAAABXQVZF"), "");  // RIFF but WAVE
  EXPECT_EQ(sniff_image_media_type("aGVsbG8="), "");
  EXPECT_EQ(sniff_image_media_type(""), "");
}

}  // namespace
}  // namespace dispatch::protocol
