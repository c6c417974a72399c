import Testing
@testable import EmbeddingCodecs

/// The codec registry: every spelling `embstore codecs` lists parses back to itself, tags are
/// unique, and a bad spelling names every codec.
@Suite struct RowCodecsTests {
    @Test(arguments: [1, 3, 64, 384, 1000])
    func everyListedFormParsesBackToItself(dimension: Int) throws {
        let forms = RowCodecs.forms(dimension: dimension)
        #expect(!forms.isEmpty)
        for form in forms {
            let codec = try Codec(parsing: form.codec)
            #expect(codec.description == form.codec)
            #expect(codec.rowCodec.tag == codec.tag)
            #expect(form.bytesPerRow >= 2, "\(form.codec): \(form.bytesPerRow)")
        }
        #expect(Set(forms.map(\.codec)).count == forms.count, "a spelling is listed twice")
    }

    @Test func tagsAreUniqueAndNamed() {
        let tags = RowCodecs.all.map(\.tag)
        #expect(Set(tags).count == tags.count)
        #expect(!tags.contains(0) && !tags.contains(8), "tag 0 is never written and 8 is the delta's tombstone")
        for codec in RowCodecs.all {
            #expect(RowCodecs.codec(tag: codec.tag)?.name == codec.name)
        }
        #expect(RowCodecs.codec(tag: 200) == nil)
        #expect(RowCodecs.name(tag: 200) == "unknown tag 200")
    }

    @Test func badSpellingsAreRefusedByName() throws {
        #expect { try Codec(parsing: "int3") } throws: { error in
            let text = "\(error)"
            return text.contains("'int3'") && RowCodecs.all.allSatisfy { text.contains($0.spelling) }
        }
        for bad in ["reduced", "reduced:0", "reduced:x", "bucket", "bucket:-1", "bucket:4:big", "int8:2", ""] {
            #expect(throws: CodecError.self, "\(bad)") { try Codec(parsing: bad) }
        }
        #expect(try Codec(parsing: "INT8") == .int8)
        #expect(try Codec(parsing: "bucket:16:scaled") == .bucket(count: 16, scaled: true))
    }
}
