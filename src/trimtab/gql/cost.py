"""The cost of a GraphQL operation, bounded before anything runs.

Each selected field costs 1 (or its weight, for fields that read storage or compute), and a
list field multiplies what is selected under it by the number of items it may return: its
``limit`` argument when the query writes a number, the field's largest allowed ``limit`` when
it is a variable (the value is not known at validation), and ``LIST_GUESS`` for lists without
a ``limit`` (slots, rules, arms…, whose length the config bounds). Fragments are followed
(each one costed once, cycles ignored: another rule reports them). Introspection fields cost 1
each; their size is bounded by the token and depth limits.

>>> from graphql import build_schema, parse, validate
>>> schema = build_schema('''
...   type Item { name: String, parts: [Item!]! }
...   type Query { items(limit: Int = 20): [Item!]!, one: Item }
... ''')
>>> cost_of(schema, parse("{ items(limit: 5) { name parts { name } } }"), {"items": 100})
36
>>> cost_of(schema, parse("{ one { name } }"), {}, {"one": 10})
11
>>> rule = cost_rule(50, {"items": 100})
>>> [e.message for e in validate(schema, parse("{ items(limit: 50) { name } }"), [rule])]
['query cost 51 exceeds the limit of 50 (each field costs 1, lists multiply by their size)']
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from graphql import (
    DocumentNode,
    FieldNode,
    FragmentDefinitionNode,
    FragmentSpreadNode,
    GraphQLError,
    GraphQLInterfaceType,
    GraphQLList,
    GraphQLNonNull,
    GraphQLObjectType,
    GraphQLSchema,
    InlineFragmentNode,
    IntValueNode,
    OperationDefinitionNode,
    SelectionSetNode,
    ValidationContext,
    ValidationRule,
)

LIST_GUESS = 5  # items assumed for a list field without a ``limit`` argument


class _Coster:
    def __init__(
        self,
        schema: GraphQLSchema,
        fragments: Mapping[str, FragmentDefinitionNode],
        max_limits: Mapping[str, int],
        weights: Mapping[str, int],
    ) -> None:
        self.schema = schema
        self.fragments = fragments
        self.max_limits = max_limits
        self.weights = weights
        self.memo: dict[str, int] = {}
        self.open: set[str] = set()

    def list_size(self, node: FieldNode) -> int:
        name = node.name.value
        most = self.max_limits.get(name, LIST_GUESS)
        for arg in node.arguments or ():
            if arg.name.value != "limit":
                continue
            if isinstance(arg.value, IntValueNode):
                return max(0, min(int(arg.value.value), most))
            return most  # a variable (or a wrong literal, refused by the resolver)
        return LIST_GUESS if name not in self.max_limits else most

    def fragment(self, name: str) -> int:
        if name in self.memo:
            return self.memo[name]
        definition = self.fragments.get(name)
        if definition is None or name in self.open:
            return 0
        self.open.add(name)
        parent = self.schema.get_type(definition.type_condition.name.value)
        cost = self.selections(parent, definition.selection_set)
        self.open.discard(name)
        self.memo[name] = cost
        return cost

    def selections(self, parent: Any, selection_set: SelectionSetNode) -> int:
        total = 0
        for sel in selection_set.selections:
            if isinstance(sel, FieldNode):
                total += self.field(parent, sel)
            elif isinstance(sel, InlineFragmentNode):
                inner = parent
                if sel.type_condition is not None:
                    inner = self.schema.get_type(sel.type_condition.name.value)
                total += self.selections(inner, sel.selection_set)
            elif isinstance(sel, FragmentSpreadNode):
                total += self.fragment(sel.name.value)
        return total

    def field(self, parent: Any, node: FieldNode) -> int:
        name = node.name.value
        if name.startswith("__"):
            return 1
        fields = (
            parent.fields if isinstance(parent, GraphQLObjectType | GraphQLInterfaceType) else {}
        )
        definition = fields.get(name)
        if definition is None:  # unknown: another validation rule names it
            return 1
        inner: Any = definition.type
        is_list = False
        while isinstance(inner, GraphQLNonNull | GraphQLList):
            is_list = is_list or isinstance(inner, GraphQLList)
            inner = inner.of_type
        children = self.selections(inner, node.selection_set) if node.selection_set else 0
        size = self.list_size(node) if is_list else 1
        return self.weights.get(name, 1) + size * children


def cost_of(
    schema: GraphQLSchema,
    document: DocumentNode,
    max_limits: Mapping[str, int],
    weights: Mapping[str, int] | None = None,
    operation: OperationDefinitionNode | None = None,
) -> int:
    """The cost of ``operation`` (default: the costliest operation of ``document``)."""
    fragments = {
        d.name.value: d for d in document.definitions if isinstance(d, FragmentDefinitionNode)
    }
    coster = _Coster(schema, fragments, max_limits, weights or {})
    operations = (
        [operation]
        if operation is not None
        else [d for d in document.definitions if isinstance(d, OperationDefinitionNode)]
    )
    costs = [0]
    for op in operations:
        root = schema.get_root_type(op.operation)
        costs.append(coster.selections(root, op.selection_set))
    return max(costs)


def cost_rule(
    max_cost: int, max_limits: Mapping[str, int], weights: Mapping[str, int] | None = None
) -> type[ValidationRule]:
    """A validation rule refusing operations that cost more than ``max_cost``.

    ``max_limits`` gives, per list field name, the largest ``limit`` its resolver accepts;
    ``weights`` the cost of fields dearer than 1 (by field name).
    """

    class CostLimit(ValidationRule):
        def __init__(self, context: ValidationContext) -> None:
            super().__init__(context)
            document = context.document
            for op in document.definitions:
                if not isinstance(op, OperationDefinitionNode):
                    continue
                cost = cost_of(context.schema, document, max_limits, weights, op)
                if cost > max_cost:
                    context.report_error(
                        GraphQLError(
                            f"query cost {cost} exceeds the limit of {max_cost} (each field "
                            "costs 1, lists multiply by their size)",
                            op,
                        )
                    )

    return CostLimit


__all__ = ["LIST_GUESS", "cost_of", "cost_rule"]
