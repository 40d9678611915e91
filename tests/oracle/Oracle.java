// Elasticsearch's answer to the body of `PUT /_connector/<id>/_error`, computed on the real
// jackson-core library. See README.md next to this file for the protocol and what is modelled.
//
// What runs, in Elasticsearch's order:
//   1. RestRequest.requiredContent(): an empty body is a parse_exception "request body is required";
//   2. JsonXContent's JsonFactory (comments allowed, strict duplicate detection, source in
//      locations, string and name length limits lifted) creates a parser over the byte array;
//   3. ConstructingObjectParser "connector_update_error_request" with one required field `error`
//      (a string or null) reads the object through JsonXContentParser, which turns Jackson's
//      exceptions into XContentParseException / XContentEOFException (wrapping B0, B or C);
//   4. the exception is rendered as Elasticsearch's compact error JSON with status 400.
//
// The same source compiles and runs against jackson-core 2.14 to 2.22: classes and methods that
// only some versions have are reached by name.

import com.fasterxml.jackson.core.JsonEncoding;
import com.fasterxml.jackson.core.JsonFactory;
import com.fasterxml.jackson.core.JsonFactoryBuilder;
import com.fasterxml.jackson.core.JsonGenerator;
import com.fasterxml.jackson.core.JsonLocation;
import com.fasterxml.jackson.core.JsonParseException;
import com.fasterxml.jackson.core.JsonParser;
import com.fasterxml.jackson.core.JsonProcessingException;
import com.fasterxml.jackson.core.JsonToken;
import com.fasterxml.jackson.core.exc.InputCoercionException;
import com.fasterxml.jackson.core.io.JsonEOFException;
import java.io.BufferedInputStream;
import java.io.BufferedOutputStream;
import java.io.ByteArrayOutputStream;
import java.io.CharConversionException;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.IOException;
import java.io.InputStream;
import java.io.OutputStream;
import java.lang.reflect.Method;
import java.nio.charset.StandardCharsets;
import java.util.Base64;

@SuppressWarnings("deprecation") // getTokenLocation(): the only name that 2.14 and 2.22 both have
public final class Oracle {

  static final String PARSER = "connector_update_error_request";

  // ---------------------------------------------------------------------------------------------
  // Elasticsearch's exceptions. Their simple class names become the JSON `type` (see typeOf), so
  // they carry Elasticsearch's own names.

  /** org.elasticsearch.xcontent.XContentParseException: "[line:col] " before the message. */
  static class XContentParseException extends IllegalArgumentException {
    final JsonLocation where;

    XContentParseException(JsonLocation where, String message, Throwable cause) {
      super(message, cause);
      this.where = where;
    }

    @Override
    public String getMessage() {
      String text = super.getMessage();
      return where == null ? text : "[" + where.getLineNr() + ":" + where.getColumnNr() + "] " + text;
    }
  }

  /** org.elasticsearch.xcontent.XContentEOFException. */
  static final class XContentEOFException extends XContentParseException {
    XContentEOFException(JsonLocation where, String message, Throwable cause) {
      super(where, message, cause);
    }
  }

  /** org.elasticsearch.ElasticsearchParseException: the `type` drops the "Elasticsearch". */
  static final class ElasticsearchParseException extends RuntimeException {
    ElasticsearchParseException(String message) {
      super(message);
    }
  }

  /** Jackson failed in a way Elasticsearch does not turn into a 400 under this wrapping. */
  static final class Unmodelled extends Exception {
    Unmodelled(Throwable cause) {
      super(cause);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // JsonXContentParser: how a Jackson exception leaves each parser method.

  enum Call { NEXT_TOKEN, NEXT_FIELD_NAME, TEXT }

  /**
   * The wrapping modelled:
   * "c": elastic/elasticsearch#123439 and later, one handler for every parser method;
   * "b": before it, from #114445 on (8.18 to 9.0, early 8.19.x / 9.1.x);
   * "b0": before #114445 (8.16, 8.17): as "b", but text() does not wrap at all.
   */
  static String wrapping = "c";

  static boolean isNamed(Throwable e, String simpleName) {
    for (Class<?> c = e.getClass(); c != null; c = c.getSuperclass()) {
      if (c.getSimpleName().equals(simpleName)) return true;
    }
    return false;
  }

  /** The Elasticsearch exception `e` becomes when thrown by Jackson inside `call`. */
  static Exception translate(Call call, IOException e) {
    JsonLocation where = e instanceof JsonProcessingException ? ((JsonProcessingException) e).getLocation() : null;
    if (!wrapping.equals("c")) {
      // Before #123439 only nextToken knows about end of input; nextFieldName (and, in "b",
      // text) wrap any JsonParseException with Jackson's text; everything else leaves the parser
      // as it is.
      if (wrapping.equals("b0") && call == Call.TEXT) return new Unmodelled(e);
      if (call == Call.NEXT_TOKEN && e instanceof JsonEOFException) {
        return new XContentEOFException(where, "Unexpected end of file", e);
      }
      if (e instanceof JsonParseException) return new XContentParseException(where, e.getMessage(), e);
      return new Unmodelled(e);
    }
    // #123439: one handler for every method.
    if (e instanceof JsonEOFException) return new XContentEOFException(where, "Unexpected end of file", e);
    if (e instanceof JsonParseException || e instanceof InputCoercionException
        || isNamed(e, "StreamConstraintsException")) {
      return new XContentParseException(where, e.getMessage(), e);
    }
    if (e instanceof CharConversionException) return new XContentParseException(null, e.getMessage(), e);
    return new Unmodelled(e);
  }

  /** A parser call that may throw; `Exception` because Jackson's IOException is translated. */
  interface JacksonCall<T> {
    T run() throws IOException;
  }

  static <T> T call(Call which, JacksonCall<T> body) throws Exception {
    try {
      return body.run();
    } catch (IOException e) {
      throw translate(which, e);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // The JsonFactory of Elasticsearch's JsonXContent.

  static JsonFactory factory() {
    JsonFactoryBuilder builder = new JsonFactoryBuilder();
    liftLimits(builder);
    JsonFactory f = builder.build();
    f.configure(JsonParser.Feature.ALLOW_COMMENTS, true);
    f.configure(JsonParser.Feature.STRICT_DUPLICATE_DETECTION, true);
    f.configure(JsonParser.Feature.INCLUDE_SOURCE_IN_LOCATION, true);
    f.configure(JsonFactory.Feature.FAIL_ON_SYMBOL_HASH_OVERFLOW, false);
    return f;
  }

  /**
   * XContentImplUtils.configure: StreamReadConstraints (jackson-core 2.15+) with maxStringLength
   * and, from 2.16, maxNameLength at Integer.MAX_VALUE. The number length (1000) and nesting depth
   * keep Jackson's defaults. Older jars have no such class: nothing to lift.
   */
  static void liftLimits(JsonFactoryBuilder builder) {
    Class<?> constraints;
    try {
      constraints = Class.forName("com.fasterxml.jackson.core.StreamReadConstraints");
    } catch (ClassNotFoundException olderThan215) {
      return;
    }
    try {
      Object b = constraints.getMethod("builder").invoke(null);
      for (String limit : new String[] {"maxStringLength", "maxNameLength"}) {
        Method set;
        try {
          set = b.getClass().getMethod(limit, int.class);
        } catch (NoSuchMethodException notInThisVersion) {
          continue;
        }
        b = set.invoke(b, Integer.MAX_VALUE);
      }
      Object built = b.getClass().getMethod("build").invoke(b);
      JsonFactoryBuilder.class.getMethod("streamReadConstraints", constraints).invoke(builder, built);
    } catch (ReflectiveOperationException e) {
      throw new IllegalStateException("cannot lift Jackson's StreamReadConstraints", e);
    }
  }

  // ---------------------------------------------------------------------------------------------
  // ConstructingObjectParser "connector_update_error_request".

  /** XContentParser.Token's name for a Jackson token. */
  static String tokenName(JsonToken t) {
    if (t == null) return "null";
    switch (t) {
      case VALUE_NUMBER_INT:
      case VALUE_NUMBER_FLOAT:
        return "VALUE_NUMBER";
      case VALUE_TRUE:
      case VALUE_FALSE:
        return "VALUE_BOOLEAN";
      default:
        return t.name();
    }
  }

  static XContentParseException objectError(JsonLocation where, String text, Throwable cause) {
    return new XContentParseException(where, "[" + PARSER + "] " + text, cause);
  }

  /** Lucene's LevenshteinDistance similarity, over UTF-16 units, in float as Lucene computes it. */
  static float similarity(String a, String b) {
    int n = a.length();
    int m = b.length();
    if (n == 0 || m == 0) return n == m ? 1f : 0f;
    int[] prev = new int[n + 1];
    int[] cur = new int[n + 1];
    for (int i = 0; i <= n; i++) prev[i] = i;
    for (int j = 1; j <= m; j++) {
      cur[0] = j;
      for (int i = 1; i <= n; i++) {
        int substitution = prev[i - 1] + (a.charAt(i - 1) == b.charAt(j - 1) ? 0 : 1);
        cur[i] = Math.min(Math.min(cur[i - 1] + 1, prev[i] + 1), substitution);
      }
      int[] swap = prev;
      prev = cur;
      cur = swap;
    }
    return 1.0f - ((float) prev[n] / Math.max(m, n));
  }

  /** The value of `error` (null for JSON null), or an exception as Elasticsearch throws it. */
  static String parseBody(byte[] body) throws Exception {
    if (body.length == 0) throw new ElasticsearchParseException("request body is required");
    JsonParser p = factory().createParser(body, 0, body.length);
    JsonToken token = p.currentToken();
    if (token == null) token = call(Call.NEXT_TOKEN, p::nextToken);
    if (token != JsonToken.START_OBJECT) {
      throw objectError(p.getTokenLocation(), "Expected START_OBJECT but was: " + tokenName(token), null);
    }
    boolean seen = false;
    String value = null;
    for (String name = call(Call.NEXT_FIELD_NAME, p::nextFieldName); name != null;
        name = call(Call.NEXT_FIELD_NAME, p::nextFieldName)) {
      JsonLocation nameAt = p.getTokenLocation();
      token = call(Call.NEXT_TOKEN, p::nextToken);
      if (!"error".equals(name)) {
        String hint = similarity(name, "error") > 0.5f ? " did you mean [error]?" : "";
        throw objectError(nameAt, "unknown field [" + name + "]" + hint, null);
      }
      if (token != JsonToken.VALUE_STRING && token != JsonToken.VALUE_NULL) {
        throw objectError(p.getTokenLocation(), "error doesn't support values of type: " + tokenName(token), null);
      }
      String v;
      try {
        v = token == JsonToken.VALUE_NULL ? null : call(Call.TEXT, p::getText);
      } catch (Exception e) {
        // ObjectParser.parseValue wraps whatever the field's parser throws, even an exception
        // that JsonXContentParser let through unwrapped.
        Throwable cause = e instanceof Unmodelled ? e.getCause() : e;
        throw objectError(p.getTokenLocation(), "failed to parse field [error]", cause);
      }
      if (!seen) value = v; // a second `error` never gets here: duplicates fail in nextFieldName
      seen = true;
    }
    if (!seen) throw new IllegalArgumentException("Required [error]");
    return value;
  }

  // ---------------------------------------------------------------------------------------------
  // ElasticsearchException.generateFailureXContent, compact.

  /** ElasticsearchException.getExceptionName: simple name, "Elasticsearch" dropped, snake_case. */
  static String typeOf(Throwable e) {
    String simple = e.getClass().getSimpleName();
    if (simple.startsWith("Elasticsearch")) simple = simple.substring("Elasticsearch".length());
    StringBuilder out = new StringBuilder();
    for (int i = 0; i < simple.length(); i++) {
      char c = simple.charAt(i);
      if (Character.isUpperCase(c)) {
        if (i > 0) out.append('_');
        out.append(Character.toLowerCase(c));
      } else {
        out.append(c);
      }
    }
    return out.toString();
  }

  /** guessRootCauses: an XContentParseException caused by another one gives way to it. */
  static Throwable rootCause(Throwable e) {
    while (e instanceof XContentParseException && e.getCause() instanceof XContentParseException) {
      e = e.getCause();
    }
    return e;
  }

  static void writeThrowable(JsonGenerator g, Throwable e, boolean withCauses) throws IOException {
    g.writeStringField("type", typeOf(e));
    g.writeStringField("reason", e.getMessage());
    if (withCauses && e.getCause() != null) {
      g.writeObjectFieldStart("caused_by");
      writeThrowable(g, e.getCause(), true);
      g.writeEndObject();
    }
  }

  static final JsonFactory OUTPUT = new JsonFactory();

  /** Writes JSON through Jackson's UTF-8 generator, as Elasticsearch's JsonXContent does. */
  interface Json {
    void write(JsonGenerator g) throws IOException;
  }

  static byte[] json(Json what) throws IOException {
    ByteArrayOutputStream bytes = new ByteArrayOutputStream();
    try (JsonGenerator g = OUTPUT.createGenerator(bytes, JsonEncoding.UTF8)) {
      what.write(g);
    }
    return bytes.toByteArray();
  }

  static byte[] errorBody(Throwable e) throws IOException {
    return json(g -> {
      g.writeStartObject();
      g.writeObjectFieldStart("error");
      g.writeArrayFieldStart("root_cause");
      g.writeStartObject();
      writeThrowable(g, rootCause(e), false);
      g.writeEndObject();
      g.writeEndArray();
      writeThrowable(g, e, true);
      g.writeEndObject();
      g.writeNumberField("status", 400);
      g.writeEndObject();
    });
  }

  static byte[] stringLiteral(String s) throws IOException {
    return json(g -> g.writeString(s));
  }

  // ---------------------------------------------------------------------------------------------
  // The line protocol.

  static byte[] line(String tag, byte[] rest) {
    byte[] head = tag.getBytes(StandardCharsets.US_ASCII);
    byte[] out = new byte[head.length + rest.length];
    System.arraycopy(head, 0, out, 0, head.length);
    System.arraycopy(rest, 0, out, head.length, rest.length);
    return out;
  }

  /** The answer line (without newline) for one body. */
  static byte[] answer(byte[] body) throws IOException {
    String value;
    try {
      value = parseBody(body);
    } catch (IllegalArgumentException | ElasticsearchParseException e) {
      return line("ERR ", errorBody(e));
    } catch (Unmodelled e) {
      return line("UNMODELLED ", stringLiteral(e.getCause().toString()));
    } catch (Exception e) {
      return line("UNMODELLED ", stringLiteral(e.toString()));
    }
    return value == null ? line("OK null", new byte[0]) : line("OK ", stringLiteral(value));
  }

  /** The body a non-comment input line stands for, or null when it is not base64. */
  static byte[] decode(String text) {
    String b64 = text.trim();
    for (Base64.Decoder d : new Base64.Decoder[] {Base64.getDecoder(), Base64.getUrlDecoder()}) {
      try {
        return d.decode(b64);
      } catch (IllegalArgumentException notThisAlphabet) {
        // try the next one
      }
    }
    return null;
  }

  /** The next input line without its LF (and a CR before it), or null at end of input. */
  static byte[] readLine(InputStream in) throws IOException {
    ByteArrayOutputStream buf = new ByteArrayOutputStream();
    int b;
    while ((b = in.read()) != -1 && b != '\n') buf.write(b);
    if (b == -1 && buf.size() == 0) return null;
    byte[] bytes = buf.toByteArray();
    int n = bytes.length;
    if (n > 0 && bytes[n - 1] == '\r') n--;
    return java.util.Arrays.copyOf(bytes, n);
  }

  static final String USAGE = "usage: java Oracle [--wrapping b0|b|c] < lines   (default: c)\n"
      + "       java Oracle --jackson-version\n"
      + "Each input line is '#...' (echoed) or the base64 of one body (empty: the empty body);\n"
      + "each gets one output line: OK null | OK \"<string>\" | ERR <400 body> | UNMODELLED \"<exception>\".\n";

  public static void main(String[] args) throws IOException {
    for (int i = 0; i < args.length; i++) {
      if (args[i].equals("--wrapping") && i + 1 < args.length) {
        wrapping = args[++i];
      } else if (args[i].equals("--jackson-version")) {
        System.out.println(new JsonFactory().version());
        return;
      } else {
        System.err.print(USAGE);
        System.exit(args[i].equals("--help") ? 0 : 2);
      }
    }
    if (!wrapping.equals("b0") && !wrapping.equals("b") && !wrapping.equals("c")) {
      System.err.print(USAGE);
      System.exit(2);
    }

    InputStream in = new BufferedInputStream(System.in, 1 << 16);
    OutputStream out = new BufferedOutputStream(new FileOutputStream(FileDescriptor.out), 1 << 16);
    boolean bad = false;
    byte[] input;
    while ((input = readLine(in)) != null) {
      if (input.length > 0 && input[0] == '#') {
        out.write(input);
      } else {
        byte[] body = decode(new String(input, StandardCharsets.ISO_8859_1));
        if (body == null) {
          bad = true;
          out.write(line("BAD ", stringLiteral("not base64: " + new String(input, StandardCharsets.ISO_8859_1))));
        } else {
          out.write(answer(body));
        }
      }
      out.write('\n');
      out.flush();
    }
    System.exit(bad ? 1 : 0);
  }
}
