"""Preventive maintenance (PM) and the service work orders generated from it."""
