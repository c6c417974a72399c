/// How far a long job (a load, an evaluation) is: a stage, and units of it done of a total.
public struct WorkProgress: Sendable {
    /// What is being done: "checking", "scoring", "writing" for a load; "decoding", "row
    /// errors", "exact neighbours"… for an evaluation.
    public let stage: String
    public let done: Int
    public let total: Int
    /// "rows" or "queries".
    public let unit: String

    public init(stage: String, done: Int, total: Int, unit: String) {
        self.stage = stage
        self.done = done
        self.total = total
        self.unit = unit
    }
}
