//! Grouping the persons tables by their codes instead of their labels.
//!
//! A person's attributes and months are dictionary columns: one small key
//! a person, the labels ("identified", "2025-03") stored once. DataFusion
//! 55 groups a dictionary column by its labels: it writes each row's label
//! into a row of bytes and hashes and compares those, which took about
//! half of the queries' time at 10 million records. Every batch of a
//! persons table shares one dictionary per column, each label in it once,
//! so a key stands for one label: grouping by the keys gives the same
//! groups. A column where that does not hold is not grouped by its keys.
//!
//! [`GroupByCodes`] is an optimizer rule that rewrites an aggregate whose
//! grouping columns come straight from a [`PersonsTable`] (through
//! filters, sorts, limits and projections that pass the column on
//! unchanged) to group by `code_of` the column, a plain integer, and then
//! puts the labels back with `label_of` above it: the output has the same
//! names, types and rows. A column of any other origin (a subquery, a
//! join, an expression) is grouped as before. At run time a batch whose
//! dictionary is not the table's own is translated to the table's keys
//! label by label, so a copy of the dictionary made on the way (by a
//! coalesce, say) changes nothing.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, DictionaryArray, PrimitiveArray, RecordBatch, StringArray,
};
use datafusion::arrow::datatypes::{
    ArrowDictionaryKeyType, DataType, SchemaRef, UInt8Type, UInt16Type, UInt32Type,
};
use datafusion::catalog::{MemTable, Session, TableProvider};
use datafusion::common::tree_node::Transformed;
use datafusion::common::{Column, DataFusionError, Result, Statistics};
use datafusion::datasource::source_as_provider;
use datafusion::logical_expr::expr::ScalarFunction;
use datafusion::logical_expr::{
    Aggregate, ColumnarValue, Expr, LogicalPlan, Projection, ScalarFunctionArgs, ScalarUDF,
    ScalarUDFImpl, Signature, TableProviderFilterPushDown, TableType, Volatility,
};
use datafusion::optimizer::{ApplyOrder, OptimizerConfig, OptimizerRule};
use datafusion::physical_plan::ExecutionPlan;

/// A persons table: its batches (a [`MemTable`]) and, for each dictionary
/// column, the one dictionary every batch of it shares.
#[derive(Debug)]
pub struct PersonsTable {
    table: MemTable,
    dictionaries: HashMap<String, ArrayRef>,
}

impl PersonsTable {
    /// The table of `parts` (batches of `schema`, a list a partition);
    /// a dictionary column whose batches all share one dictionary (the
    /// same array, as the persons table's do) of distinct labels is
    /// grouped by its keys.
    pub fn try_new(schema: SchemaRef, parts: Vec<Vec<RecordBatch>>) -> Result<Self> {
        let mut dictionaries = HashMap::new();
        if let Some(first) = parts.iter().flatten().next() {
            for (i, field) in schema.fields().iter().enumerate() {
                let Some(values) = dictionary_values(first.column(i)) else {
                    continue;
                };
                let shared = parts.iter().flatten().all(|b| {
                    dictionary_values(b.column(i)).is_some_and(|v| Arc::ptr_eq(&v, &values))
                });
                // A key stands for one label only when no label is
                // repeated (or missing) in the dictionary.
                let labels = values.as_string::<i32>();
                let distinct: std::collections::HashSet<Option<&str>> = labels.iter().collect();
                if shared && labels.null_count() == 0 && distinct.len() == labels.len() {
                    dictionaries.insert(field.name().clone(), values);
                }
            }
        }
        Ok(PersonsTable {
            table: MemTable::try_new(schema, parts)?,
            dictionaries,
        })
    }
}

/// The labels of a dictionary column of string labels and unsigned keys.
fn dictionary_values(a: &ArrayRef) -> Option<ArrayRef> {
    match a.data_type() {
        DataType::Dictionary(k, v)
            if **v == DataType::Utf8
                && matches!(**k, DataType::UInt8 | DataType::UInt16 | DataType::UInt32) =>
        {
            Some(a.as_any_dictionary().values().clone())
        }
        _ => None,
    }
}

#[async_trait]
impl TableProvider for PersonsTable {
    fn schema(&self) -> SchemaRef {
        self.table.schema()
    }

    fn table_type(&self) -> TableType {
        self.table.table_type()
    }

    async fn scan(
        &self,
        state: &dyn Session,
        projection: Option<&Vec<usize>>,
        filters: &[Expr],
        limit: Option<usize>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        self.table.scan(state, projection, filters, limit).await
    }

    fn supports_filters_pushdown(
        &self,
        filters: &[&Expr],
    ) -> Result<Vec<TableProviderFilterPushDown>> {
        self.table.supports_filters_pushdown(filters)
    }

    fn statistics(&self) -> Option<Statistics> {
        self.table.statistics()
    }
}

/// The optimizer rule: see the module's text.
#[derive(Debug, Default)]
pub struct GroupByCodes;

/// The prefix of the names of the keys grouped by.
const KEY: &str = "__safetally_code_";

impl OptimizerRule for GroupByCodes {
    fn name(&self) -> &str {
        "group_by_codes"
    }

    fn apply_order(&self) -> Option<ApplyOrder> {
        Some(ApplyOrder::BottomUp)
    }

    fn supports_rewrite(&self) -> bool {
        true
    }

    fn rewrite(
        &self,
        plan: LogicalPlan,
        _config: &dyn OptimizerConfig,
    ) -> Result<Transformed<LogicalPlan>> {
        let LogicalPlan::Aggregate(agg) = &plan else {
            return Ok(Transformed::no(plan));
        };
        if agg
            .group_expr
            .iter()
            .any(|e| matches!(e, Expr::GroupingSet(_)))
        {
            return Ok(Transformed::no(plan));
        }
        let dictionaries: Vec<Option<ArrayRef>> = agg
            .group_expr
            .iter()
            .map(|e| match e {
                Expr::Column(c) => dictionary_of(&agg.input, c),
                _ => None,
            })
            .collect();
        if dictionaries.iter().all(Option::is_none) {
            return Ok(Transformed::no(plan));
        }
        let group_expr = agg
            .group_expr
            .iter()
            .zip(&dictionaries)
            .enumerate()
            .map(|(i, (e, d))| match d {
                Some(values) => {
                    udf(Codes::code_of(values.clone()), e.clone()).alias(format!("{KEY}{i}"))
                }
                None => e.clone(),
            })
            .collect();
        let grouped = Aggregate::try_new(agg.input.clone(), group_expr, agg.aggr_expr.clone())?;
        // The aggregate's columns as they were: labels for the keys, the
        // rest passed on by name.
        let exprs = (0..agg.schema.fields().len())
            .map(|i| {
                let (qualifier, field) = agg.schema.qualified_field(i);
                match dictionaries.get(i).and_then(Option::as_ref) {
                    Some(values) => udf(
                        Codes::label_of(values.clone(), field.data_type().clone()),
                        Expr::Column(Column::from_name(format!("{KEY}{i}"))),
                    )
                    .alias_qualified(qualifier.cloned(), field.name()),
                    None => Expr::Column(Column::new(qualifier.cloned(), field.name())),
                }
            })
            .collect();
        let projection = Projection::try_new(exprs, Arc::new(LogicalPlan::Aggregate(grouped)))?;
        Ok(Transformed::yes(LogicalPlan::Projection(projection)))
    }
}

/// `f(arg)` as an expression.
fn udf(f: impl ScalarUDFImpl + 'static, arg: Expr) -> Expr {
    Expr::ScalarFunction(ScalarFunction::new_udf(
        Arc::new(ScalarUDF::new_from_impl(f)),
        vec![arg],
    ))
}

/// The shared dictionary of column `c` of `plan`'s output when the column
/// is a [`PersonsTable`]'s, passed on unchanged.
fn dictionary_of(plan: &LogicalPlan, c: &Column) -> Option<ArrayRef> {
    match plan {
        LogicalPlan::TableScan(scan) => {
            if c.relation.as_ref() != Some(&scan.table_name) {
                return None;
            }
            let provider = source_as_provider(&scan.source).ok()?;
            let table = provider.downcast_ref::<PersonsTable>()?;
            table.dictionaries.get(&c.name).cloned()
        }
        LogicalPlan::Filter(f) => dictionary_of(&f.input, c),
        LogicalPlan::Sort(s) => dictionary_of(&s.input, c),
        LogicalPlan::Limit(l) => dictionary_of(&l.input, c),
        LogicalPlan::Projection(p) => {
            let i = p.schema.index_of_column(c).ok()?;
            match &p.expr[i] {
                Expr::Column(inner) if inner.name == c.name && inner.relation == c.relation => {
                    dictionary_of(&p.input, inner)
                }
                _ => None,
            }
        }
        _ => None,
    }
}

/// The two functions of the rewrite, over one dictionary `values`:
/// `code_of(column)` (`label` `None`), a dictionary column's keys as keys
/// of `values`; and `label_of(key)` (`label` the column's type), keys of
/// `values` back as that dictionary column. Two are equal when they are
/// the same function of the same array.
#[derive(Debug)]
struct Codes {
    values: ArrayRef,
    label: Option<DataType>,
    signature: Signature,
}

impl Codes {
    fn code_of(values: ArrayRef) -> Self {
        Self::new(values, None)
    }

    fn label_of(values: ArrayRef, column: DataType) -> Self {
        Self::new(values, Some(column))
    }

    fn new(values: ArrayRef, label: Option<DataType>) -> Self {
        Codes {
            values,
            label,
            signature: Signature::any(1, Volatility::Immutable),
        }
    }
}

impl PartialEq for Codes {
    fn eq(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.values, &other.values) && self.label == other.label
    }
}

impl Eq for Codes {}

impl Hash for Codes {
    fn hash<H: Hasher>(&self, state: &mut H) {
        Arc::as_ptr(&self.values).cast::<()>().hash(state);
        self.label.hash(state);
    }
}

impl ScalarUDFImpl for Codes {
    fn name(&self) -> &str {
        match self.label {
            None => "code_of",
            Some(_) => "label_of",
        }
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, args: &[DataType]) -> Result<DataType> {
        match (&self.label, args) {
            (Some(column), _) => Ok(column.clone()),
            (None, [DataType::Dictionary(k, _)]) => Ok(k.as_ref().clone()),
            (None, _) => Err(DataFusionError::Plan(
                "code_of takes one dictionary column".to_string(),
            )),
        }
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> Result<ColumnarValue> {
        let wrong = |what: String| DataFusionError::Internal(format!("{}: {what}", self.name()));
        let [arg] = args.args.as_slice() else {
            return Err(wrong("takes one argument".to_string()));
        };
        let a = arg.to_array(args.number_rows)?;
        let out: ArrayRef = match (&self.label, a.data_type()) {
            (None, DataType::Dictionary(k, _)) => match **k {
                DataType::UInt8 => Arc::new(keys_of::<UInt8Type>(&a, &self.values)?),
                DataType::UInt16 => Arc::new(keys_of::<UInt16Type>(&a, &self.values)?),
                DataType::UInt32 => Arc::new(keys_of::<UInt32Type>(&a, &self.values)?),
                _ => return Err(wrong(format!("keys of {k}"))),
            },
            (Some(_), DataType::UInt8) => labelled::<UInt8Type>(&a, &self.values)?,
            (Some(_), DataType::UInt16) => labelled::<UInt16Type>(&a, &self.values)?,
            (Some(_), DataType::UInt32) => labelled::<UInt32Type>(&a, &self.values)?,
            (_, other) => return Err(wrong(format!("a column of {other}"))),
        };
        Ok(ColumnarValue::Array(out))
    }
}

/// The keys of dictionary array `a` as keys of `values`: its own keys when
/// its dictionary is `values`, else each translated by its label.
fn keys_of<K: ArrowDictionaryKeyType>(a: &ArrayRef, values: &ArrayRef) -> Result<PrimitiveArray<K>>
where
    K::Native: TryFrom<usize>,
{
    let dict: &DictionaryArray<K> = a.as_dictionary::<K>();
    if Arc::ptr_eq(dict.values(), values) {
        return Ok(dict.keys().clone());
    }
    let labels = values.as_string::<i32>();
    let position: HashMap<&str, usize> = labels
        .iter()
        .enumerate()
        .filter_map(|(i, l)| l.map(|l| (l, i)))
        .collect();
    let theirs: &StringArray = dict.values().as_string::<i32>();
    let mut map: Vec<Option<K::Native>> = Vec::with_capacity(theirs.len());
    for l in theirs.iter() {
        let to = match l {
            Some(l) => match position.get(l) {
                Some(&p) => Some(K::Native::try_from(p).map_err(|_| {
                    DataFusionError::Internal("code_of: a key out of range".to_string())
                })?),
                None => {
                    return Err(DataFusionError::Internal(
                        "code_of: a label the persons table does not have".to_string(),
                    ));
                }
            },
            None => None,
        };
        map.push(to);
    }
    Ok(dict
        .keys()
        .iter()
        .map(|k| k.and_then(|k| map[datafusion::arrow::datatypes::ArrowNativeType::as_usize(k)]))
        .collect())
}

/// Keys `keys` of `values` as a dictionary column.
fn labelled<K: ArrowDictionaryKeyType>(keys: &ArrayRef, values: &ArrayRef) -> Result<ArrayRef> {
    Ok(Arc::new(DictionaryArray::<K>::try_new(
        keys.as_primitive::<K>().clone(),
        values.clone(),
    )?))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::UInt16Array;
    use datafusion::arrow::compute::cast;
    use datafusion::arrow::datatypes::{Field, Schema};
    use datafusion::prelude::SessionContext;

    /// A persons table of 3,000 rows in 2 partitions of 500-row batches:
    /// outcome and sex (some unknown) with 8-bit keys, first_month with
    /// 32-bit keys, organisations a number. Every batch shares each
    /// column's dictionary unless `own_sex` gives each batch a copy of
    /// sex's.
    fn parts(own_sex: bool) -> (SchemaRef, Vec<Vec<RecordBatch>>) {
        let dict = |k: DataType| DataType::Dictionary(Box::new(k), Box::new(DataType::Utf8));
        let schema: SchemaRef = Arc::new(Schema::new(vec![
            Field::new("outcome", dict(DataType::UInt8), true),
            Field::new("sex", dict(DataType::UInt8), true),
            Field::new("first_month", dict(DataType::UInt32), false),
            Field::new("organisations", DataType::UInt16, false),
        ]));
        let outcomes: ArrayRef = Arc::new(StringArray::from(vec![
            "not identified",
            "identified",
            "referred",
        ]));
        let sexes = || -> ArrayRef { Arc::new(StringArray::from(vec!["female", "male"])) };
        let shared_sex = sexes();
        let months: ArrayRef = Arc::new(StringArray::from(vec!["2025-01", "2025-02", "2025-03"]));
        let mut state = 7u64;
        let mut next = |m: u64| {
            state = state
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (state >> 33) % m
        };
        let mut parts = vec![Vec::new(), Vec::new()];
        for b in 0..6 {
            let rows: Vec<[u64; 4]> = (0..500)
                .map(|_| [next(4), next(3), next(3), 1 + next(4)])
                .collect();
            let outcome: DictionaryArray<UInt8Type> = DictionaryArray::try_new(
                rows.iter()
                    .map(|r| (r[0] < 3).then_some(r[0] as u8))
                    .collect(),
                outcomes.clone(),
            )
            .unwrap();
            let sex: DictionaryArray<UInt8Type> = DictionaryArray::try_new(
                rows.iter()
                    .map(|r| (r[1] < 2).then_some(r[1] as u8))
                    .collect(),
                if own_sex { sexes() } else { shared_sex.clone() },
            )
            .unwrap();
            let month: DictionaryArray<UInt32Type> = DictionaryArray::try_new(
                rows.iter().map(|r| Some(r[2] as u32)).collect(),
                months.clone(),
            )
            .unwrap();
            let orgs: UInt16Array = rows.iter().map(|r| r[3] as u16).collect();
            let batch = RecordBatch::try_new(
                schema.clone(),
                vec![
                    Arc::new(outcome),
                    Arc::new(sex),
                    Arc::new(month),
                    Arc::new(orgs),
                ],
            )
            .unwrap();
            parts[b % 2].push(batch);
        }
        (schema, parts)
    }

    /// Contexts over the same table: DataFusion as it is, and the report's
    /// (the rule, the table a [`PersonsTable`]).
    fn contexts(own_sex: bool) -> (SessionContext, SessionContext) {
        let (schema, parts) = parts(own_sex);
        let plain = SessionContext::new();
        plain
            .register_table(
                "p",
                Arc::new(MemTable::try_new(schema.clone(), parts.clone()).unwrap()),
            )
            .unwrap();
        let ours = SessionContext::new();
        ours.add_optimizer_rule(Arc::new(GroupByCodes));
        ours.register_table("p", Arc::new(PersonsTable::try_new(schema, parts).unwrap()))
            .unwrap();
        (plain, ours)
    }

    /// A query's rows as text, sorted, its columns' names and types, and
    /// whether its optimized plan groups by codes.
    fn run(ctx: &SessionContext, sql: &str) -> (Vec<Vec<String>>, Vec<(String, DataType)>, bool) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        rt.block_on(async {
            let df = ctx.sql(sql).await.unwrap();
            let plan = df.clone().into_optimized_plan().unwrap();
            let by_codes = format!("{}", plan.display_indent()).contains("code_of");
            let columns = df
                .schema()
                .fields()
                .iter()
                .map(|f| (f.name().clone(), f.data_type().clone()))
                .collect();
            let mut rows = Vec::new();
            for b in df.collect().await.unwrap() {
                let cols: Vec<ArrayRef> = b
                    .columns()
                    .iter()
                    .map(|c| cast(c, &DataType::Utf8).unwrap())
                    .collect();
                for r in 0..b.num_rows() {
                    rows.push(
                        cols.iter()
                            .map(|c| {
                                let c = c.as_string::<i32>();
                                if c.is_valid(r) {
                                    c.value(r).to_string()
                                } else {
                                    "NULL".to_string()
                                }
                            })
                            .collect(),
                    );
                }
            }
            rows.sort();
            (rows, columns, by_codes)
        })
    }

    #[test]
    fn grouping_by_codes_gives_the_rows_and_columns_grouping_by_labels_gives() {
        let (plain, ours) = contexts(false);
        for (sql, grouped_by_codes) in [
            (
                "SELECT outcome, count(*) AS count FROM p GROUP BY outcome",
                true,
            ),
            (
                "SELECT sex, count(*) AS count FROM p WHERE outcome = 'identified' GROUP BY sex",
                true,
            ),
            (
                "SELECT first_month, sex, count(*) AS count FROM p GROUP BY first_month, sex",
                true,
            ),
            (
                "SELECT outcome, sex, count(*) AS n, max(organisations) AS most FROM p \
                 WHERE organisations > 1 GROUP BY sex, outcome HAVING count(*) > 60 \
                 ORDER BY outcome",
                true,
            ),
            (
                "SELECT outcome, count(DISTINCT sex) AS sexes FROM p GROUP BY outcome",
                true,
            ),
            (
                "SELECT CASE WHEN organisations >= 3 THEN 3 ELSE organisations END AS n, \
                 outcome, count(*) AS count FROM p GROUP BY 1, 2",
                true,
            ),
            // Not the table's column as it is: grouped by labels.
            (
                "SELECT upper(CAST(outcome AS VARCHAR)) AS o, count(*) AS count FROM p GROUP BY 1",
                false,
            ),
            // A query's own `p`, whose `outcome` is the table's sex.
            (
                "WITH p AS (SELECT sex AS outcome FROM p) \
                 SELECT outcome, count(*) AS count FROM p GROUP BY outcome",
                false,
            ),
        ] {
            let (rows, columns, _) = run(&plain, sql);
            let (our_rows, our_columns, by_codes) = run(&ours, sql);
            assert!(!rows.is_empty(), "{sql}");
            assert_eq!(our_rows, rows, "{sql}");
            assert_eq!(our_columns, columns, "{sql}");
            assert_eq!(by_codes, grouped_by_codes, "{sql}");
        }
    }

    #[test]
    fn a_column_whose_batches_each_have_their_own_dictionary_is_grouped_by_labels() {
        let (plain, ours) = contexts(true);
        let sql = "SELECT sex, outcome, count(*) AS count FROM p GROUP BY sex, outcome";
        let (rows, _, _) = run(&plain, sql);
        let (our_rows, _, by_codes) = run(&ours, sql);
        assert_eq!(our_rows, rows);
        // Outcome's dictionary is shared, sex's is not.
        assert!(by_codes);
        let (_, parts) = parts(true);
        let table = PersonsTable::try_new(parts[0][0].schema(), parts).unwrap();
        let mut shared: Vec<&String> = table.dictionaries.keys().collect();
        shared.sort();
        assert_eq!(shared, ["first_month", "outcome"]);
    }

    #[test]
    fn a_dictionary_that_repeats_a_label_is_grouped_by_labels() {
        let schema: SchemaRef = Arc::new(Schema::new(vec![Field::new(
            "sex",
            DataType::Dictionary(Box::new(DataType::UInt8), Box::new(DataType::Utf8)),
            true,
        )]));
        // Keys 0 and 2 both stand for "female".
        let values: ArrayRef = Arc::new(StringArray::from(vec!["female", "male", "female"]));
        let sex: DictionaryArray<UInt8Type> = DictionaryArray::try_new(
            vec![Some(0u8), Some(2), Some(1), Some(2), None]
                .into_iter()
                .collect(),
            values,
        )
        .unwrap();
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(sex)]).unwrap();
        let table = PersonsTable::try_new(schema, vec![vec![batch]]).unwrap();
        assert!(table.dictionaries.is_empty());
        let ctx = SessionContext::new();
        ctx.add_optimizer_rule(Arc::new(GroupByCodes));
        ctx.register_table("p", Arc::new(table)).unwrap();
        let (rows, _, by_codes) = run(&ctx, "SELECT sex, count(*) AS n FROM p GROUP BY sex");
        assert!(!by_codes);
        assert_eq!(rows, [["NULL", "1"], ["female", "3"], ["male", "1"]]);
    }

    #[test]
    fn keys_of_another_dictionary_are_translated_by_label() {
        let ours: ArrayRef = Arc::new(StringArray::from(vec!["a", "b", "c"]));
        let theirs: ArrayRef = Arc::new(
            DictionaryArray::<UInt8Type>::try_new(
                vec![Some(0u8), Some(1), None, Some(0)]
                    .into_iter()
                    .collect(),
                Arc::new(StringArray::from(vec!["c", "a"])),
            )
            .unwrap(),
        );
        let keys = keys_of::<UInt8Type>(&theirs, &ours).unwrap();
        assert_eq!(
            keys.iter().collect::<Vec<_>>(),
            [Some(2), Some(0), None, Some(2)]
        );
        // The same array: its keys as they are.
        let same_dict: ArrayRef = Arc::new(
            DictionaryArray::<UInt8Type>::try_new(
                vec![Some(2u8), None].into_iter().collect(),
                ours.clone(),
            )
            .unwrap(),
        );
        let keys = keys_of::<UInt8Type>(&same_dict, &ours).unwrap();
        assert_eq!(keys.iter().collect::<Vec<_>>(), [Some(2), None]);
        // A label the table does not have is an error, not a wrong group.
        let stranger: ArrayRef = Arc::new(
            DictionaryArray::<UInt8Type>::try_new(
                vec![Some(0u8)].into_iter().collect(),
                Arc::new(StringArray::from(vec!["z"])),
            )
            .unwrap(),
        );
        assert!(keys_of::<UInt8Type>(&stranger, &ours).is_err());
    }
}
